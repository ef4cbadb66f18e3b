//! Reading GLUE splits from Parquet files in the hub's schema.
//!
//! Columns are located by name and cast to the type the task needs, so that files written
//! with `large_string` text, `int32` labels or `int64` ids (other converters) read the same as
//! the hub's (`string`, `int64` / STS-B `float32`, `int32`).

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Int64Type};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{GlueError, Result};
use crate::task::GlueTask;

/// The label of one example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Label {
    /// A class id in `0..num_labels`.
    Class(usize),
    /// A regression target (STS-B similarity, 0..5).
    Score(f32),
}

impl Label {
    /// The label as a number (class id or score).
    pub fn as_f64(self) -> f64 {
        match self {
            Label::Class(c) => c as f64,
            Label::Score(s) => s as f64,
        }
    }
}

/// One labelled example of a GLUE split.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The hub's `idx` column (not always `0..n`: MRPC keeps the MSR row numbers).
    pub idx: i64,
    /// The first (or only) text.
    pub text_a: String,
    /// The second text of a pair task.
    pub text_b: Option<String>,
    /// The gold label.
    pub label: Label,
}

/// All examples of one split of one task.
#[derive(Debug, Clone)]
pub struct SplitData {
    /// The task.
    pub task: GlueTask,
    /// The split name (`train`, `validation`, `validation_matched`, ...).
    pub split: String,
    /// The file read.
    pub path: PathBuf,
    /// The examples, in file order.
    pub examples: Vec<Example>,
}

/// Reads one split of `task` from `data_dir` in the hub layout.
///
/// A missing file is [`GlueError::MissingSplit`]; a null text, a null label, a test-split label
/// (-1) or a class id outside the task's label space is [`GlueError::BadRow`] with the row.
pub fn load_split(data_dir: &Path, task: GlueTask, split: &str) -> Result<SplitData> {
    let path = task.split_path(data_dir, split);
    if !path.is_file() {
        return Err(GlueError::MissingSplit {
            task: task.name().to_string(),
            split: split.to_string(),
            path,
        });
    }
    let examples = read_examples(&path, task)?;
    Ok(SplitData {
        task,
        split: split.to_string(),
        path,
        examples,
    })
}

fn read_examples(path: &Path, task: GlueTask) -> Result<Vec<Example>> {
    let pq = |source| GlueError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(crate::error::io_err(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
    let schema = builder.schema().clone();
    let cols = task.text_columns();
    let mut wanted = vec![cols.first];
    wanted.extend(cols.second);
    wanted.extend(["label", "idx"]);
    let mut indices = Vec::with_capacity(wanted.len());
    for name in &wanted {
        match schema.index_of(name) {
            Ok(i) => indices.push(i),
            Err(_) => {
                return Err(GlueError::MissingColumn {
                    path: path.to_path_buf(),
                    task: task.name().to_string(),
                    column: name.to_string(),
                    found: schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let reader = builder.with_projection(mask).build().map_err(pq)?;
    let mut examples = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|source| GlueError::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
        append_batch(path, task, &batch, &mut examples)?;
    }
    Ok(examples)
}

fn column_as(
    path: &Path,
    batch: &RecordBatch,
    name: &str,
    ty: &DataType,
) -> Result<arrow::array::ArrayRef> {
    let col = batch
        .column_by_name(name)
        .expect("projected columns are present in every batch");
    if col.data_type() == ty {
        return Ok(col.clone());
    }
    arrow::compute::cast(col, ty).map_err(|_| GlueError::ColumnType {
        path: path.to_path_buf(),
        column: name.to_string(),
        found: col.data_type().to_string(),
        expected: ty.to_string(),
    })
}

fn append_batch(
    path: &Path,
    task: GlueTask,
    batch: &RecordBatch,
    out: &mut Vec<Example>,
) -> Result<()> {
    let base = out.len();
    let cols = task.text_columns();
    let bad = |row: usize, reason: String| GlueError::BadRow {
        path: path.to_path_buf(),
        row: base + row,
        reason,
    };
    let a = column_as(path, batch, cols.first, &DataType::Utf8)?;
    let a = a.as_string::<i32>();
    let b = match cols.second {
        Some(name) => Some(column_as(path, batch, name, &DataType::Utf8)?),
        None => None,
    };
    let b = b.as_ref().map(|b| b.as_string::<i32>());
    let idx = column_as(path, batch, "idx", &DataType::Int64)?;
    let idx = idx.as_primitive::<Int64Type>();
    let label_ty = if task.is_regression() {
        DataType::Float32
    } else {
        DataType::Int64
    };
    let label = column_as(path, batch, "label", &label_ty)?;
    for row in 0..batch.num_rows() {
        let text = |arr: &arrow::array::StringArray, col: &str| {
            if arr.is_null(row) {
                Err(bad(
                    row,
                    format!("column {col:?} is null; every GLUE example needs its text"),
                ))
            } else {
                Ok(arr.value(row).to_string())
            }
        };
        let text_a = text(a, cols.first)?;
        let text_b = match (b, cols.second) {
            (Some(b), Some(name)) => Some(text(b, name)?),
            _ => None,
        };
        if label.is_null(row) {
            return Err(bad(row, "label is null".into()));
        }
        let label = if task.is_regression() {
            let v = label.as_primitive::<Float32Type>().value(row);
            if !v.is_finite() || v < 0.0 {
                return Err(bad(
                    row,
                    format!("label {v} is not a similarity score (a test split without labels?)"),
                ));
            }
            Label::Score(v)
        } else {
            let v = label.as_primitive::<Int64Type>().value(row);
            if v < 0 || v as usize >= task.num_labels() {
                return Err(bad(
                    row,
                    format!(
                        "label {v} is outside 0..{} ({}); test splits carry -1 and cannot be used for training or scoring",
                        task.num_labels(),
                        task.label_names().join(", ")
                    ),
                ));
            }
            Label::Class(v as usize)
        };
        if idx.is_null(row) {
            return Err(bad(row, "idx is null".into()));
        }
        out.push(Example {
            idx: idx.value(row),
            text_a,
            text_b,
            label,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror() -> Option<PathBuf> {
        let dir = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/hf-mirror/datasets/nyu-mll/glue/resolve/main"
        ));
        if dir.is_dir() {
            Some(dir)
        } else {
            eprintln!("skipping: GLUE mirror not found at {}", dir.display());
            None
        }
    }

    #[test]
    fn reads_every_mirror_config() {
        let Some(dir) = mirror() else { return };
        let expected = [
            (GlueTask::Cola, "train", 8551),
            (GlueTask::Cola, "validation", 1043),
            (GlueTask::Sst2, "validation", 872),
            (GlueTask::Mrpc, "train", 3668),
            (GlueTask::Mrpc, "validation", 408),
            (GlueTask::Stsb, "train", 5749),
            (GlueTask::Stsb, "validation", 1500),
            (GlueTask::Qnli, "validation", 5463),
            (GlueTask::Rte, "train", 2490),
            (GlueTask::Rte, "validation", 277),
            (GlueTask::Wnli, "train", 635),
            (GlueTask::Wnli, "validation", 71),
        ];
        for (task, split, rows) in expected {
            let data = load_split(&dir, task, split).unwrap();
            assert_eq!(data.examples.len(), rows, "{task}/{split}");
            assert_eq!(
                data.examples[0].text_b.is_some(),
                task.text_columns().second.is_some()
            );
            for e in &data.examples {
                match e.label {
                    Label::Class(c) => assert!(c < task.num_labels()),
                    Label::Score(s) => assert!((0.0..=5.0).contains(&s)),
                }
            }
        }
    }

    #[test]
    fn mirror_rows_and_labels() {
        let Some(dir) = mirror() else { return };
        let cola = load_split(&dir, GlueTask::Cola, "validation").unwrap();
        let first = &cola.examples[0];
        assert_eq!(first.idx, 0);
        assert_eq!(
            first.text_a,
            "The sailors rode the breeze clear of the rocks."
        );
        assert_eq!(first.label, Label::Class(1));

        let stsb = load_split(&dir, GlueTask::Stsb, "validation").unwrap();
        let scores: Vec<f32> = stsb
            .examples
            .iter()
            .map(|e| match e.label {
                Label::Score(s) => s,
                Label::Class(_) => panic!("STS-B labels are scores"),
            })
            .collect();
        assert!(
            scores.iter().any(|s| s.fract() != 0.0),
            "STS-B has fractional scores"
        );
        assert_eq!(stsb.examples[0].text_a, "A man with a hard hat is dancing.");
        assert_eq!(scores[0], 5.0);

        let mrpc = load_split(&dir, GlueTask::Mrpc, "validation").unwrap();
        assert_eq!(mrpc.examples[0].idx, 9, "MRPC keeps the MSR row numbers");

        let sst2 = load_split(&dir, GlueTask::Sst2, "train").unwrap();
        assert_eq!(sst2.examples.len(), 67349);
        let positive = sst2
            .examples
            .iter()
            .filter(|e| e.label == Label::Class(1))
            .count();
        assert_eq!(positive, 37569);
    }

    #[test]
    fn test_split_labels_are_rejected_with_the_row() {
        let Some(dir) = mirror() else { return };
        let err = load_split(&dir, GlueTask::Rte, "test").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, GlueError::BadRow { row: 0, .. }), "{msg}");
        assert!(
            msg.contains("rte/test-00000-of-00001.parquet") && msg.contains("-1"),
            "{msg}"
        );
    }

    #[test]
    fn missing_split_names_task_and_file() {
        let Some(dir) = mirror() else { return };
        let err = load_split(&dir, GlueTask::Qnli, "train").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, GlueError::MissingSplit { .. }));
        assert!(
            msg.contains("qnli") && msg.contains("qnli/train-00000-of-00001.parquet"),
            "{msg}"
        );
        let err = crate::task::task_files(&dir, GlueTask::Mnli).unwrap_err();
        assert!(
            err.to_string()
                .contains("mnli/train-00000-of-00001.parquet")
        );
        let files = crate::task::task_files(&dir, GlueTask::Rte).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[1].ends_with("rte/validation-00000-of-00001.parquet"));
    }
}
