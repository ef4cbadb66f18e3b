//! Data parallelism (`devices`): the reference's own sanity check runs its multi-GPU code on CPU
//! processes (`torchrun --nproc_per_node=4 ... impl.backend=gloo`); here two and four CPU
//! "devices" (replicas trained in threads, gradients summed on the first) must train as one
//! device does for the same global batch.

mod common;

use cram_pretrain::PretrainError;

const VOCAB: usize = 64;
const SEQ: usize = 32;

#[test]
fn several_cpu_devices_train_like_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    let tokens = common::synthetic_rows(1200, SEQ, VOCAB, 1);
    common::write_sequences(&data, &tokens, SEQ, 400, VOCAB);
    let mut params = common::small_params(SEQ);
    // Global batch 32 in micro-batches of 8: four per step, with a ramp from one.
    params.micro_batch = 8;
    params.batch_size = 32;
    params.ramp_fraction = 0.5;
    params.budget_steps = Some(16);
    params.log_every = 1;
    params.lr = 2e-3;

    let (one, a) = common::train_with_losses(&params, &data, &tmp.path().join("one"));
    assert_eq!(one.devices, 1);
    for n in [2, 4] {
        let mut p = params.clone();
        p.devices = vec!["cpu".to_string(); n];
        let (many, b) = common::train_with_losses(&p, &data, &tmp.path().join(format!("d{n}")));
        assert_eq!(many.devices, n);
        assert_eq!(many.device.matches(" + ").count(), n - 1, "{}", many.device);
        assert_eq!(
            (many.steps, many.micro_steps, many.tokens),
            (one.steps, one.micro_steps, one.tokens),
            "the same batches and budget"
        );
        // The same sums in another order (per-device partial sums): within float noise.
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / x.abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-4,
            "{n} devices: curves differ by {worst:e}: {a:?} vs {b:?}"
        );
    }
}

#[test]
fn data_parallelism_needs_dropout_off_and_one_device_setting() {
    let mut p = common::small_params(SEQ);
    p.devices = vec!["cpu".into(), "cpu".into()];
    p.dropout = true;
    let err = p.resolve().unwrap_err();
    assert!(matches!(err, PretrainError::Param { .. }), "{err}");
    assert!(err.to_string().contains("dropout"), "{err}");
    p.dropout = false;
    p.device = "cuda:3".into();
    let err = p.resolve().unwrap_err();
    assert!(err.to_string().contains("either"), "{err}");
    p.device = "auto".into();
    assert_eq!(p.resolve().unwrap().devices, ["cpu", "cpu"]);
    p.devices = vec!["cpu".into(), "tpu:0".into()];
    assert!(p.resolve().unwrap_err().to_string().contains("tpu"));
}
