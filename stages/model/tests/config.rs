//! Presets, overrides, validation and parameter counts.

use burn::module::Module;
use burn::tensor::Device;
use cram_model::config::{FfnActivation, NormScheme, PositionEmbedding};
use cram_model::{ConfigError, MlmModel, ModelConfig, ModelOverrides, num_params, param_names};

#[test]
fn crammed_bert_has_the_papers_parameter_count() {
    let c = ModelConfig::preset("crammed-bert").unwrap();
    assert_eq!(
        (
            c.num_layers,
            c.hidden_size,
            c.num_heads,
            c.intermed_size,
            c.vocab_size
        ),
        (16, 768, 12, 3072, 32768)
    );
    assert_eq!(
        (c.max_seq_length, c.norm_eps, c.head_dim),
        (128, 1e-12, 1024)
    );
    assert_eq!(c.num_mlm_params(), 119_589_889);
}

#[test]
fn counted_parameters_match_the_built_models() {
    let device = Device::flex();
    let small = |mut c: ModelConfig| {
        c.vocab_size = 97;
        c.hidden_size = 16;
        c.num_heads = 2;
        c.intermed_size = 24;
        c.max_seq_length = 12;
        c.num_layers = 2;
        c
    };
    for name in ModelConfig::PRESETS {
        let c = small(ModelConfig::preset(name).unwrap());
        let model = MlmModel::init(&c, 1, &device).unwrap();
        assert_eq!(num_params(&model), c.num_mlm_params(), "{name}");
        assert_eq!(
            model.num_params(),
            c.num_mlm_params(),
            "{name}: burn's own count"
        );
    }
}

#[test]
fn presets_are_as_documented() {
    let tiny = ModelConfig::preset("tiny").unwrap();
    assert_eq!(
        (
            tiny.num_layers,
            tiny.hidden_size,
            tiny.num_heads,
            tiny.intermed_size,
            tiny.vocab_size
        ),
        (2, 128, 2, 512, 8192)
    );
    let mini = ModelConfig::preset("mini").unwrap();
    assert_eq!(
        (
            mini.num_layers,
            mini.hidden_size,
            mini.num_heads,
            mini.intermed_size
        ),
        (4, 256, 4, 1024)
    );
    let bo = ModelConfig::preset("bert-original").unwrap();
    assert_eq!(bo.norm_scheme, NormScheme::Post);
    assert_eq!(bo.position_embedding, PositionEmbedding::Learned);
    assert_eq!(bo.ffn_activation, FfnActivation::Gelu);
    assert!(bo.dense_bias && bo.head_transform && bo.decoder_bias && !bo.final_norm);
    assert_eq!(
        (bo.num_layers, bo.max_seq_length, bo.type_vocab_size),
        (12, 512, 2)
    );
    for name in ModelConfig::PRESETS {
        ModelConfig::preset(name).unwrap().validate().unwrap();
    }
    assert!(ModelConfig::preset("gpt-2").is_none());
    let err = ModelConfig::try_preset("gpt-2").unwrap_err().to_string();
    assert!(
        err.contains("crammed-bert") && err.contains("gpt-2"),
        "{err}"
    );
}

#[test]
fn overrides_apply_and_reject_unknown_fields() {
    let o: ModelOverrides =
        serde_json::from_str(r#"{"num_layers": 3, "hidden_dropout": 0.0, "norm_scheme": "post"}"#)
            .unwrap();
    let c = o.resolve("tiny").unwrap();
    assert_eq!(c.num_layers, 3);
    assert_eq!(c.hidden_dropout, 0.0);
    assert_eq!(c.norm_scheme, NormScheme::Post);
    assert_eq!(c.hidden_size, 128, "untouched fields keep the preset");
    assert!(ModelOverrides::default().is_empty());
    let err = serde_json::from_str::<ModelOverrides>(r#"{"num_layer": 3}"#).unwrap_err();
    assert!(err.to_string().contains("num_layer"), "{err}");
    let schema = serde_json::to_string(&schemars::schema_for!(ModelOverrides)).unwrap();
    assert!(schema.contains("intermed_size"));
}

#[test]
fn validation_names_the_field() {
    let mut c = ModelConfig::tiny();
    c.num_heads = 3;
    let err = c.validate().unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                field: "hidden_size",
                ..
            }
        ),
        "{err}"
    );
    let mut c = ModelConfig::tiny();
    c.intermed_size = 511;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("intermed_size")
    );
    let mut c = ModelConfig::tiny();
    c.hidden_dropout = 1.0;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("hidden_dropout")
    );
    let mut c = ModelConfig::tiny();
    c.pad_token_id = c.vocab_size;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("pad_token_id")
    );
}

#[test]
fn init_follows_the_recipe_and_is_seeded() {
    let device = Device::flex();
    let mut c = ModelConfig::tiny();
    c.vocab_size = 300;
    let a = MlmModel::init(&c, 7, &device).unwrap();
    let b = MlmModel::init(&c, 7, &device).unwrap();
    let d = MlmModel::init(&c, 8, &device).unwrap();
    let word = |m: &MlmModel| {
        m.encoder
            .embedding
            .word
            .val()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    };
    let (wa, wb, wd) = (word(&a), word(&b), word(&d));
    assert_eq!(wa, wb, "same seed, same weights");
    assert_ne!(wa, wd, "another seed, other weights");
    assert!(
        wa[..c.hidden_size].iter().all(|v| *v == 0.0),
        "pad row zeroed"
    );
    let rest = &wa[c.hidden_size..];
    let mean = rest.iter().map(|v| *v as f64).sum::<f64>() / rest.len() as f64;
    let std =
        (rest.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / rest.len() as f64).sqrt();
    assert!(
        mean.abs() < 1e-3 && (std - 0.02).abs() < 1e-3,
        "normal(0, 0.02): mean {mean}, std {std}"
    );
    let mut seen = Vec::new();
    a.visit_named(&mut |name, p| {
        let v = p.to_vec().unwrap();
        if name.ends_with("norm.weight")
            || name.ends_with("norm1.weight")
            || name.ends_with("norm2.weight")
        {
            assert!(v.iter().all(|x| *x == 1.0), "{name}");
        } else if name.ends_with(".bias") {
            assert!(v.iter().all(|x| *x == 0.0), "{name}");
        } else if name.ends_with("pos_scale") {
            assert!((v[0] - 1.0 / (128f32).sqrt()).abs() < 1e-7);
        }
        seen.push(name);
    });
    let names: Vec<String> = param_names(&a).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, seen);
    assert!(names.contains(&"encoder.layers.1.ffn.out.weight".to_string()));
    assert_eq!(names.len(), 5 + 2 * 8 + 2 - 1);
}
