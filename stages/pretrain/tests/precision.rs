//! Mixed precision: bf16 matrix products track fp32 training on the tiny model.

mod common;

use std::path::Path;

use cram_model::PrecisionSpec;
use cram_pretrain::PretrainSummary;

const VOCAB: usize = 64;
const SEQ: usize = 32;
const STEPS: u64 = 50;

/// Trains `STEPS` steps at `precision`; returns the summary and the loss of every step.
fn train(data: &Path, dir: &Path, precision: PrecisionSpec) -> (PretrainSummary, Vec<f64>) {
    let mut params = common::small_params(SEQ);
    params.budget_steps = Some(STEPS);
    params.lr = 2e-3;
    params.log_every = 1;
    params.precision = precision;
    common::train_with_losses(&params, data, dir)
}

#[test]
fn bf16_tracks_fp32_for_fifty_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("seqs");
    let tokens = common::synthetic_rows(2000, SEQ, VOCAB, 1);
    common::write_sequences(&data, &tokens, SEQ, 700, VOCAB);

    let (auto, _) = train(&data, &tmp.path().join("auto"), PrecisionSpec::Auto);
    assert_eq!(auto.precision, "fp32", "auto is fp32 on the CPU");
    let (fp32, a) = train(&data, &tmp.path().join("fp32"), PrecisionSpec::Fp32);
    let (bf16, b) = train(&data, &tmp.path().join("bf16"), PrecisionSpec::Bf16);
    assert_eq!(
        (fp32.precision.as_str(), bf16.precision.as_str()),
        ("fp32", "bf16")
    );
    assert_eq!((a.len(), b.len()), (STEPS as usize, STEPS as usize));

    // bf16 keeps 8 bits of mantissa: the products really ran in it, so the curves are not
    // identical, but they stay within 3 % of each other at every step, and both learn.
    let rel: Vec<f64> = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / x).collect();
    let worst = rel.iter().copied().fold(0.0, f64::max);
    assert!(worst > 0.0, "bf16 changed nothing: {b:?}");
    assert!(
        worst < 0.03,
        "bf16 is {:.2} % off fp32 (fp32 {a:?}, bf16 {b:?})",
        100.0 * worst
    );
    let (fa, fb) = (fp32.final_loss.unwrap(), bf16.final_loss.unwrap());
    eprintln!(
        "bf16 against fp32 over {STEPS} steps: at most {:.3} % apart, final loss {fb:.4} against \
         {fa:.4}",
        100.0 * worst
    );
    assert!(fa < 0.97 * a[0], "fp32 learned: {} -> {fa}", a[0]);
    assert!(fb < 0.97 * b[0], "bf16 learned: {} -> {fb}", b[0]);
    assert!(
        (fa - fb).abs() / fa < 0.02,
        "final loss fp32 {fa} vs bf16 {fb}"
    );
}
