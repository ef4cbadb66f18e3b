//! Export of a checkpoint directory to a Hugging Face `transformers` model directory.
//!
//! The directory loads with `AutoModelForMaskedLM` (an MLM checkpoint) or
//! `AutoModelForSequenceClassification` (a fine-tuned one) and `trust_remote_code=True`:
//!
//! * `config.json`: the model config, `model_type`, `architectures` and an `auto_map` naming
//!   the classes of the two Python files beside it; for a classifier, its labels;
//! * `configuration_cram.py`, `modeling_cram.py`: a PyTorch version of the model, written for
//!   cram (`stages/model/hf/`), whose module tree follows the `cram-ref-v1` tensor names;
//! * `model.safetensors`: the checkpoint's tensors as they are, under the metadata
//!   `transformers` asks for (`format = pt`; the cram metadata keeps its keys with a `cram_`
//!   prefix);
//! * `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`;
//! * `cram_reference.safetensors`: a small batch (one row padded) and the logits cram computes
//!   for it, so that the loaded model can be checked against cram anywhere;
//! * `README.md`: a model card saying where the model came from and how to load it.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::{Value, json};

use crate::checkpoint::{
    FORMAT, KIND_CLASSIFICATION, KIND_MLM, TensorFile, load_classification_with_config,
    load_mlm_with_config, write_safetensors,
};
use crate::config::ModelConfig;
use crate::error::ModelError;

/// The configuration class, written as `configuration_cram.py`.
pub const CONFIGURATION_PY: &str = include_str!("../hf/configuration_cram.py");
/// The model classes, written as `modeling_cram.py`.
pub const MODELING_PY: &str = include_str!("../hf/modeling_cram.py");
/// `model_type` of the exported config.
pub const MODEL_TYPE: &str = "cram-bert";
/// The file of the reference batch and cram's logits for it.
pub const REFERENCE_FILE: &str = "cram_reference.safetensors";

/// Rows and longest length of the reference batch.
const REFERENCE_ROWS: usize = 2;
const REFERENCE_MAX_LEN: usize = 16;
/// Seed of the reference batch's token ids.
const REFERENCE_SEED: u64 = 0x5EED_0E47;

/// The special tokens named in `tokenizer_config.json`, by their `transformers` role.
const SPECIAL_TOKENS: [(&str, &str); 5] = [
    ("pad_token", "[PAD]"),
    ("unk_token", "[UNK]"),
    ("cls_token", "[CLS]"),
    ("sep_token", "[SEP]"),
    ("mask_token", "[MASK]"),
];

/// What the exporter is told beyond the checkpoint directory.
#[derive(Debug, Clone, Default)]
pub struct HfExportInfo {
    /// Class names of a classification head in id order (`LABEL_i` where empty).
    pub labels: Vec<String>,
    /// Where the checkpoint came from (pipeline, stage, cache key, ...), in display order;
    /// written into the model card and under `cram` in `config.json`.
    pub provenance: Vec<(String, String)>,
}

/// What [`export_hugging_face`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct HfExported {
    /// `mlm` or `classification`.
    pub kind: String,
    /// The `transformers` class the directory loads as.
    pub architecture: &'static str,
    /// The files written, sorted.
    pub files: Vec<String>,
    /// Number of parameters in `model.safetensors`.
    pub parameters: usize,
    /// Largest absolute logit of the reference batch (a scale for comparisons).
    pub reference_logit_scale: f32,
}

/// Writes the `transformers` directory of the checkpoint in `checkpoint_dir`
/// (`model.safetensors` in the `cram-ref-v1` contract and `tokenizer.json`) into `out_dir`,
/// which must exist.
pub fn export_hugging_face(
    checkpoint_dir: &Path,
    out_dir: &Path,
    info: &HfExportInfo,
) -> Result<HfExported, ModelError> {
    let model_path = checkpoint_dir.join("model.safetensors");
    let tokenizer_path = checkpoint_dir.join("tokenizer.json");
    for p in [&model_path, &tokenizer_path] {
        if !p.is_file() {
            return Err(ModelError::Export {
                path: p.clone(),
                reason: "missing: a checkpoint directory holds model.safetensors and \
                         tokenizer.json (the output of a pretrain stage or of a GLUE task)"
                    .into(),
            });
        }
    }
    let file = TensorFile::open(&model_path)?;
    let kind = file.metadata().get("kind").cloned().unwrap_or_default();
    let (architecture, classes) = match kind.as_str() {
        KIND_MLM => ("CramForMaskedLM", 0),
        KIND_CLASSIFICATION => {
            file.check_kind(KIND_CLASSIFICATION)?;
            ("CramForSequenceClassification", file.config()?.num_labels)
        }
        other => {
            return Err(ModelError::Metadata {
                path: model_path,
                reason: format!("kind is {other:?}, expected \"mlm\" or \"classification\""),
            });
        }
    };
    file.check_kind(&kind)?;
    let config = file.config()?;
    if !info.labels.is_empty() && info.labels.len() != classes {
        return Err(ModelError::Export {
            path: model_path,
            reason: format!(
                "the head has {classes} outputs but {} label names were given",
                info.labels.len()
            ),
        });
    }

    let parameters = write_model(&file, &kind, &config, &out_dir.join("model.safetensors"))?;
    write_text(
        &out_dir.join("config.json"),
        &pretty(&hf_config(&config, architecture, classes, info)),
    )?;
    write_text(&out_dir.join("configuration_cram.py"), CONFIGURATION_PY)?;
    write_text(&out_dir.join("modeling_cram.py"), MODELING_PY)?;
    write_tokenizer(&tokenizer_path, &config, out_dir)?;
    let scale = write_reference(&model_path, &kind, &config, &out_dir.join(REFERENCE_FILE))?;
    write_text(
        &out_dir.join("README.md"),
        &model_card(&config, architecture, parameters, info),
    )?;

    let mut files: Vec<String> = std::fs::read_dir(out_dir)
        .map_err(io(out_dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    Ok(HfExported {
        kind,
        architecture,
        files,
        parameters,
        reference_logit_scale: scale,
    })
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_text(path: &Path, text: &str) -> Result<(), ModelError> {
    std::fs::write(path, text).map_err(io(path))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialise") + "\n"
}

/// Copies every tensor under the metadata `transformers` accepts; returns the parameter count.
fn write_model(
    file: &TensorFile,
    kind: &str,
    config: &ModelConfig,
    path: &Path,
) -> Result<usize, ModelError> {
    let st = file.view();
    let mut views = Vec::new();
    let mut parameters = 0;
    for (name, t) in st.tensors() {
        if t.dtype() != Dtype::F32 {
            continue;
        }
        parameters += t.shape().iter().product::<usize>();
        let view = TensorView::new(t.dtype(), t.shape().to_vec(), t.data()).map_err(|source| {
            ModelError::Safetensors {
                path: file.path().to_path_buf(),
                source,
            }
        })?;
        views.push((name, view));
    }
    let metadata = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        ("cram_format".to_string(), FORMAT.to_string()),
        ("cram_kind".to_string(), kind.to_string()),
        ("cram_config".to_string(), config.to_json()),
    ]);
    write_safetensors(path, views, &metadata)?;
    Ok(parameters)
}

/// `config.json`: cram's config fields, the `transformers` bookkeeping and, for a
/// classifier, its labels.
fn hf_config(
    config: &ModelConfig,
    architecture: &str,
    classes: usize,
    info: &HfExportInfo,
) -> Value {
    let mut v = serde_json::to_value(config).expect("ModelConfig serialises");
    let m = v.as_object_mut().expect("a JSON object");
    m.remove("num_labels");
    m.insert("model_type".into(), json!(MODEL_TYPE));
    m.insert("architectures".into(), json!([architecture]));
    m.insert(
        "auto_map".into(),
        json!({
            "AutoConfig": "configuration_cram.CramConfig",
            "AutoModel": "modeling_cram.CramModel",
            "AutoModelForMaskedLM": "modeling_cram.CramForMaskedLM",
            "AutoModelForSequenceClassification": "modeling_cram.CramForSequenceClassification",
        }),
    );
    m.insert("dtype".into(), json!("float32"));
    if classes > 0 {
        let names: Vec<String> = (0..classes)
            .map(|i| {
                info.labels
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("LABEL_{i}"))
            })
            .collect();
        let id2label: serde_json::Map<String, Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (i.to_string(), json!(n)))
            .collect();
        let label2id: serde_json::Map<String, Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), json!(i)))
            .collect();
        m.insert("id2label".into(), Value::Object(id2label));
        m.insert("label2id".into(), Value::Object(label2id));
        let problem = if classes == 1 {
            "regression"
        } else {
            "single_label_classification"
        };
        m.insert("problem_type".into(), json!(problem));
    }
    let provenance: serde_json::Map<String, Value> = info
        .provenance
        .iter()
        .map(|(k, val)| (k.clone(), json!(val)))
        .collect();
    m.insert("cram".into(), Value::Object(provenance));
    v
}

/// Copies `tokenizer.json` and writes the two files `AutoTokenizer` reads beside it.
fn write_tokenizer(src: &Path, config: &ModelConfig, out_dir: &Path) -> Result<(), ModelError> {
    let text = std::fs::read_to_string(src).map_err(io(src))?;
    let tokenizer: Value = serde_json::from_str(&text).map_err(|source| ModelError::Export {
        path: src.to_path_buf(),
        reason: format!("not a tokenizer.json: {source}"),
    })?;
    let known: Vec<&str> = tokenizer["added_tokens"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["content"].as_str()).collect())
        .unwrap_or_default();
    let specials: serde_json::Map<String, Value> = SPECIAL_TOKENS
        .iter()
        .filter(|(_, token)| known.contains(token))
        .map(|(role, token)| (role.to_string(), json!(token)))
        .collect();
    let mut tokenizer_config = specials.clone();
    tokenizer_config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    tokenizer_config.insert("model_max_length".into(), json!(config.max_seq_length));
    tokenizer_config.insert("clean_up_tokenization_spaces".into(), json!(false));
    // The model has no token types: the tokenizer need not return them.
    tokenizer_config.insert(
        "model_input_names".into(),
        json!(["input_ids", "attention_mask"]),
    );
    write_text(&out_dir.join("tokenizer.json"), &text)?;
    write_text(
        &out_dir.join("tokenizer_config.json"),
        &pretty(&Value::Object(tokenizer_config)),
    )?;
    write_text(
        &out_dir.join("special_tokens_map.json"),
        &pretty(&Value::Object(specials)),
    )
}

/// The reference batch: `REFERENCE_ROWS` rows of seeded random ids, the last row's final
/// quarter padded (mask 0). Returns ids, mask and `[rows, seq]`.
pub fn reference_batch(config: &ModelConfig) -> (Vec<i64>, Vec<i64>, [usize; 2]) {
    let seq = config.max_seq_length.clamp(1, REFERENCE_MAX_LEN);
    let mut rng = ChaCha8Rng::seed_from_u64(REFERENCE_SEED);
    let mut ids = Vec::with_capacity(REFERENCE_ROWS * seq);
    let mut mask = Vec::with_capacity(REFERENCE_ROWS * seq);
    for row in 0..REFERENCE_ROWS {
        let padded_from = if row + 1 == REFERENCE_ROWS {
            seq - seq / 4
        } else {
            seq
        };
        for pos in 0..seq {
            if pos < padded_from {
                ids.push(rng.random_range(0..config.vocab_size as i64));
                mask.push(1);
            } else {
                ids.push(config.pad_token_id as i64);
                mask.push(0);
            }
        }
    }
    (ids, mask, [REFERENCE_ROWS, seq])
}

/// Runs the checkpoint on the reference batch on the host (fp32, dropout off) and writes the
/// batch and the logits (`[B, S, V]` for MLM, `[B, C]` for classification); returns the
/// largest absolute logit.
fn write_reference(
    model_path: &Path,
    kind: &str,
    config: &ModelConfig,
    path: &Path,
) -> Result<f32, ModelError> {
    let device = crate::select_device("cpu").map_err(|e| ModelError::Export {
        path: model_path.to_path_buf(),
        reason: format!("no host device to run the reference batch on: {e}"),
    })?;
    let (ids, mask, [b, s]) = reference_batch(config);
    let ids_t = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [b, s]), &device);
    let mask_t = Tensor::<2, Int>::from_data(TensorData::new(mask.clone(), [b, s]), &device);
    let quiet = config.clone().with_dropout(0.0);
    let (logits, shape): (Tensor<2>, Vec<usize>) = if kind == KIND_MLM {
        let model = load_mlm_with_config(model_path, &quiet, &device)?;
        let hidden = model.encoder().forward_flat(ids_t, Some(mask_t));
        (model.decode(hidden), vec![b, s, config.vocab_size])
    } else {
        let model = load_classification_with_config(model_path, &quiet, &device)?;
        (
            model.forward(ids_t, Some(mask_t)),
            vec![b, config.num_labels],
        )
    };
    let values: Vec<f32> = logits.into_data().iter::<f32>().collect();
    let scale = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let le_i64 = |v: &[i64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (ids_b, mask_b) = (le_i64(&ids), le_i64(&mask));
    let logits_b: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    let st_err = |source| ModelError::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    let views = vec![
        (
            "input_ids".to_string(),
            TensorView::new(Dtype::I64, vec![b, s], &ids_b).map_err(st_err)?,
        ),
        (
            "attention_mask".to_string(),
            TensorView::new(Dtype::I64, vec![b, s], &mask_b).map_err(st_err)?,
        ),
        (
            "logits".to_string(),
            TensorView::new(Dtype::F32, shape, &logits_b).map_err(st_err)?,
        ),
    ];
    let metadata = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            "about".to_string(),
            "cram's logits (host, fp32, dropout off) for input_ids with attention_mask".to_string(),
        ),
    ]);
    write_safetensors(path, views, &metadata)?;
    Ok(scale)
}

/// The model card.
fn model_card(
    config: &ModelConfig,
    architecture: &str,
    parameters: usize,
    info: &HfExportInfo,
) -> String {
    let auto = if architecture == "CramForMaskedLM" {
        "AutoModelForMaskedLM"
    } else {
        "AutoModelForSequenceClassification"
    };
    let mut card = String::new();
    card.push_str("# A cram model\n\n");
    card.push_str(&format!(
        "A BERT-style encoder trained by cram (a reproduction of Cramming: a language \
         model on one GPU in one day), exported as `{architecture}` with its own modeling \
         code. {parameters} parameters: {} layers, hidden size {}, {} heads, feed-forward {} \
         ({}), {} positions ({}), {}-norm layers, vocabulary {}.\n\n",
        config.num_layers,
        config.hidden_size,
        config.num_heads,
        config.intermed_size,
        enum_name(&config.ffn_activation),
        config.max_seq_length,
        enum_name(&config.position_embedding),
        enum_name(&config.norm_scheme),
        config.vocab_size,
    ));
    if !info.provenance.is_empty() {
        card.push_str("| | |\n|---|---|\n");
        for (k, v) in &info.provenance {
            card.push_str(&format!("| {k} | `{v}` |\n"));
        }
        card.push('\n');
    }
    card.push_str(&format!(
        "## Loading\n\n```python\nfrom transformers import AutoTokenizer, {auto}\n\n\
         tokenizer = AutoTokenizer.from_pretrained(DIR)\n\
         model = {auto}.from_pretrained(DIR, trust_remote_code=True).eval()\n\
         logits = model(**tokenizer([\"A sentence.\"], return_tensors=\"pt\")).logits\n```\n\n\
         The tensors keep cram's `cram-ref-v1` names; the model takes `input_ids` and \
         `attention_mask` (token types are ignored).\n\n\
         ## Checking it against cram\n\n\
         `{REFERENCE_FILE}` holds a batch and the logits cram computed for it:\n\n\
         ```python\nfrom safetensors.torch import load_file\n\n\
         ref = load_file(DIR + \"/{REFERENCE_FILE}\")\n\
         out = model(input_ids=ref[\"input_ids\"], attention_mask=ref[\"attention_mask\"]).logits\n\
         print((out - ref[\"logits\"]).abs().max())  # about 1e-6 in fp32\n```\n"
    ));
    card
}

/// The kebab-case name serde gives a config enum.
fn enum_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
