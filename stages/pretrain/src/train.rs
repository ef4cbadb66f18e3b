//! The training loop of the `pretrain` kind.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use cram_model::{MlmModel, ModelConfig};
use indicatif::ProgressBar;

use crate::checkpoint::{self, TrainState};
use crate::collator::MlmCollator;
use crate::data::{Reader, Sequences, StreamSpan, read_tokenizer};
use crate::error::PretrainError;
use crate::optim::{AdamW, GradAccumulator, host_f32};
use crate::params::{
    MetricsLine, PretrainParams, PretrainSummary, PretrainTimings, ResolvedPretrain, StoppedBy,
    TimelinePoint,
};
use crate::schedule::{accumulation_steps, batch_size};
use crate::shards::{forward_backward, shard_count};

/// Micro-batches the reader thread prepares ahead of the training step.
const PREFETCH: usize = 16;

/// Weight of the newest loss in the progress bar's smoothed loss.
const SMOOTHING: f64 = 0.05;

/// Controls of a run beyond its parameters: an interrupt flag (e.g. set by a Ctrl-C handler) and
/// deterministic hooks for tests. None of them changes what a finished run computes.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// When set to true, the run writes a checkpoint after the current step and returns
    /// [`PretrainError::Interrupted`].
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Also checkpoint every this many optimizer steps (in addition to `checkpoint_every`
    /// minutes).
    pub checkpoint_every_steps: Option<u64>,
    /// Behave as if interrupted once this many optimizer steps are completed (a simulated crash
    /// after a checkpoint, for tests).
    pub interrupt_after_steps: Option<u64>,
}

/// Runs the `pretrain` kind: trains on the packed sequences in `sequences_dir` and writes the
/// checkpoint entry into `out_dir` (see the crate docs). `work_dir` is a persistent scratch
/// directory for resumable checkpoints.
pub fn run_pretrain(
    params: &PretrainParams,
    sequences_dir: &Path,
    seed: u64,
    work_dir: &Path,
    out_dir: &Path,
    progress: &ProgressBar,
) -> Result<PretrainSummary, PretrainError> {
    run_pretrain_with(
        params,
        sequences_dir,
        seed,
        work_dir,
        out_dir,
        progress,
        &RunControl::default(),
    )
}

/// The architecture a run trains: the resolved preset with the tokenizer's vocabulary size
/// (unless overridden; a smaller override than the tokenizer's is an error).
pub fn model_config(
    resolved: &ResolvedPretrain,
    tokenizer_vocab: usize,
    tokenizer_path: &Path,
) -> Result<ModelConfig, PretrainError> {
    let mut config = resolved.model.clone();
    if resolved.vocab_size_from_tokenizer {
        config.vocab_size = tokenizer_vocab;
    } else if config.vocab_size < tokenizer_vocab {
        return Err(PretrainError::Tokenizer {
            path: tokenizer_path.to_path_buf(),
            reason: format!(
                "the tokenizer has {tokenizer_vocab} tokens but model.vocab_size = {}",
                config.vocab_size
            ),
        });
    }
    config.validate()?;
    Ok(config)
}

/// The masking seed derived from the pipeline seed (apart from the model-init seed).
fn mask_seed(seed: u64) -> u64 {
    seed ^ 0x6d6c_6d5f_6d61_736b // "mlm_mask"
}

/// Mixed into the mask seed for the held-out rows' fixed masks ("heldout!").
const HELDOUT_MASK_SEED: u64 = 0x6865_6c64_6f75_7421;

/// The seed of the backend's random stream (dropout masks) for optimizer step `step`: reseeded
/// every step, so that a resumed run draws what an uninterrupted one would (the stream's state
/// itself cannot be saved).
fn dropout_seed(seed: u64, step: u64) -> u64 {
    // splitmix64 of (seed, step): well spread even for consecutive steps.
    let mut z =
        (seed ^ 0x6472_6f70_6f75_7400).wrapping_add(step.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Prints a line above the progress bar, or on stderr where the bar is hidden (no terminal):
/// what a run must tell its user before it spends its budget cannot depend on a terminal.
fn say(progress: &ProgressBar, line: &str) {
    if progress.is_hidden() {
        eprintln!("{line}");
    } else {
        progress.println(line);
    }
}

/// A wall-clock budget from which training on the CPU by accident is worth a warning.
const LONG_CPU_BUDGET_SECONDS: f64 = 3600.0;

/// What a run says about its devices before the budget clock starts: the device chosen and why,
/// and a warning when a long wall-clock budget falls back to the CPU or an NVIDIA GPU is there
/// that this binary cannot use.
pub fn device_notice(
    choices: &[cram_model::DeviceChoice],
    budget_seconds: Option<f64>,
    budget_steps: Option<u64>,
) -> Vec<String> {
    let mut out = Vec::new();
    for c in choices {
        out.push(format!(
            "pretrain: training on {:?} ({})",
            c.device, c.reason
        ));
    }
    let on_cpu = choices.iter().any(|c| cram_model::is_host(&c.device));
    if !on_cpu {
        return out;
    }
    let long_clock =
        budget_steps.is_none() && budget_seconds.is_some_and(|b| b >= LONG_CPU_BUDGET_SECONDS);
    let fallback = choices.iter().any(|c| c.cpu_fallback);
    if fallback && long_clock {
        out.push(format!(
            "warning: a wall-clock budget of {} will be spent on the CPU, which is orders of \
             magnitude slower than a GPU; set device = \"gpu\" to refuse to start without one, \
             or device = \"cpu\" to say the CPU is meant",
            fmt_duration(budget_seconds.unwrap_or_default())
        ));
    }
    if let Some(hint) = cram_model::gpu_build_hint() {
        out.push(format!("warning: {hint}"));
    }
    out
}

/// The backend name of a device, from burn's description of it.
pub fn backend_name(device: &Device) -> String {
    let d = format!("{device:?}").to_ascii_lowercase();
    if d.contains("cuda") {
        "cuda".into()
    } else if d.contains("wgpu") || d.contains("vulkan") {
        "vulkan".into()
    } else if d.contains("flex") {
        "flex".into()
    } else {
        d
    }
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn fmt_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// [`run_pretrain`] with [`RunControl`].
pub fn run_pretrain_with(
    params: &PretrainParams,
    sequences_dir: &Path,
    seed: u64,
    work_dir: &Path,
    out_dir: &Path,
    progress: &ProgressBar,
    control: &RunControl,
) -> Result<PretrainSummary, PretrainError> {
    let resolved = params.resolve()?;
    let tokenizer_path = sequences_dir.join("tokenizer.json");
    let tok = read_tokenizer(&tokenizer_path)?;
    let config = model_config(&resolved, tok.vocab_size, &tokenizer_path)?;
    let seqs = Sequences::open(sequences_dir)?;
    if seqs.seq_len > config.max_seq_length {
        return Err(PretrainError::Data {
            path: sequences_dir.to_path_buf(),
            reason: format!(
                "rows of {} tokens exceed the model's max_seq_length = {}",
                seqs.seq_len, config.max_seq_length
            ),
        });
    }
    let train_config = if resolved.dropout {
        config.clone()
    } else {
        config.clone().with_dropout(0.0)
    };
    // The first device holds the model, the optimizer and the gradient sums; the others (data
    // parallelism) train replicas refreshed after every step.
    let choices: Vec<cram_model::DeviceChoice> = resolved
        .devices
        .iter()
        .map(|d| cram_model::choose_device(d))
        .collect::<Result<_, _>>()?;
    let devices: Vec<Device> = choices.iter().map(|c| c.device.clone()).collect();
    let device = devices[0].clone();
    let precision = resolved.precision.resolve(&device)?;
    let ad = device.clone().autodiff();
    let ads: Vec<Device> = devices.iter().map(|d| d.clone().autodiff()).collect();

    let mut fingerprint = serde_json::to_value(&resolved).expect("params serialise");
    if let Some(obj) = fingerprint.as_object_mut() {
        // Operational settings that do not change what is computed.
        // (Data parallelism changes only the order of float sums: a run may resume on other
        // devices.)
        for k in ["device", "devices", "checkpoint_every", "log_every"] {
            obj.remove(k);
        }
        obj.insert("seed".into(), seed.into());
        obj.insert("vocab_size".into(), config.vocab_size.into());
        obj.insert("seq_len".into(), seqs.seq_len.into());
        obj.insert("rows".into(), seqs.total_rows.into());
    }

    // Model and optimizer: fresh, or from the work directory's checkpoint.
    let found = checkpoint::find(work_dir, &fingerprint)?;
    let (model, mut optim, mut state, mut metrics, resumed_from_step) = match found {
        Some(f) => {
            let model = cram_model::load_mlm_with_config(
                &f.dir.join(checkpoint::MODEL_FILE),
                &train_config,
                &ad,
            )?;
            let optim = AdamW::load(
                resolved.adamw(),
                &f.dir.join(checkpoint::OPTIMIZER_FILE),
                &model,
            )?;
            let step = f.state.step;
            let mut metrics = f.metrics;
            metrics.retain(|m| m.step <= step);
            (model, optim, f.state, metrics, Some(step))
        }
        None => (
            MlmModel::init(&train_config, seed, &ad)?,
            AdamW::new(resolved.adamw()),
            TrainState::fresh(fingerprint.clone()),
            Vec::new(),
            None,
        ),
    };
    let mut model = model
        .with_precision(precision)
        .with_attention_kernel(resolved.attention);
    let parameters = cram_model::num_params(&model);

    let m = resolved.micro_batch;
    let s = seqs.seq_len;
    let collator = MlmCollator {
        rate: resolved.mlm_rate,
        mask_id: tok.mask_id,
        random_vocab: tok.vocab_size as u32,
        seed: mask_seed(seed),
    };
    let rows = seqs.total_rows;
    let span = StreamSpan {
        order_seed: seed,
        start: state.position,
        end: resolved
            .max_epochs
            .map(|e| (e * rows as f64).floor() as u64),
    };
    let reader = Reader::spawn(&seqs, span, m, collator, PREFETCH)?;
    let heldout = crate::heldout::Heldout::open(
        sequences_dir,
        &collator,
        mask_seed(seed) ^ HELDOUT_MASK_SEED,
        m,
    )?;
    let epochs = |sequences: u64| {
        if rows > 0 {
            sequences as f64 / rows as f64
        } else {
            0.0
        }
    };
    if rows < m as u64 {
        say(
            progress,
            &format!(
                "warning: the input holds {rows} rows, fewer than one micro-batch of {m}: no step can \
             be taken (lower micro_batch or pack more text)"
            ),
        );
    }

    match (resolved.budget_steps, resolved.budget_tokens) {
        (Some(n), _) | (None, Some(n)) => progress.set_length(n),
        (None, None) => progress.set_length(resolved.budget_seconds.unwrap_or(0.0).ceil() as u64),
    }

    for line in device_notice(&choices, resolved.budget_seconds, resolved.budget_steps) {
        say(progress, &line);
    }

    // The budget clock starts here, after model construction and data opening.
    let start = Instant::now();
    let spent_before = state.elapsed_seconds;
    // Held-out evaluations are not training: the budget clock stops while they run.
    let paused = std::cell::Cell::new(0.0f64);
    let elapsed = || spent_before + start.elapsed().as_secs_f64() - paused.get();
    let evaluate = |model: &MlmModel| -> Option<f64> {
        let h = heldout.as_ref()?;
        let t0 = Instant::now();
        let loss = h.loss(model, &device);
        paused.set(paused.get() + t0.elapsed().as_secs_f64());
        Some(loss)
    };
    let mut last_checkpoint = Instant::now();
    let mut last_log = (Instant::now(), state.tokens);
    let checkpoint_every =
        (resolved.checkpoint_every > 0.0).then_some(resolved.checkpoint_every * 60.0);

    // Dropout draws from the backend's one random stream: shards running at once would take
    // its numbers in an order that changes from run to run, so with dropout on a micro-batch
    // runs whole.
    let shards = |rows: usize| {
        if resolved.dropout {
            1
        } else {
            (shard_count(&ad, rows, resolved.cpu_shards) / ads.len()).max(1)
        }
    };
    let mut last_micro_batch: Option<f64> = None;
    let on_host = cram_model::is_host(&device);
    // The summed losses of the steps not read yet (on a device: see the step's end).
    let mut unread_losses: Option<Tensor<1>> = None;
    let mut budget_spent = false;
    let stopped_by = loop {
        if budget_spent {
            break StoppedBy::Budget;
        }
        let now = elapsed();
        let p = match (
            resolved.budget_steps,
            resolved.budget_tokens,
            resolved.budget_seconds,
        ) {
            (Some(n), _, _) => {
                if state.step >= n {
                    break StoppedBy::Steps;
                }
                state.step as f64 / n as f64
            }
            (None, Some(n), _) => {
                if state.tokens >= n {
                    break StoppedBy::Tokens;
                }
                state.tokens as f64 / n as f64
            }
            (None, None, Some(b)) => {
                if now >= b {
                    break StoppedBy::Budget;
                }
                now / b
            }
            (None, None, None) => unreachable!("resolve sets one budget"),
        };
        let accum = accumulation_steps(p, m, resolved.batch_size, resolved.ramp_fraction);
        let lr = resolved.schedule.lr(resolved.lr, p);
        if resolved.dropout {
            ad.seed(dropout_seed(seed, state.step));
        }

        let mut grads = GradAccumulator::new();
        let mut loss_sum: Option<Tensor<1>> = None;
        let mut data_ended = false;
        let mut done = 0usize;
        // The replicas the other devices train on in this step (none while the batch ramp
        // makes a step of one micro-batch).
        let replicas: Vec<MlmModel> = if accum > 1 {
            ads[1..]
                .iter()
                .map(|d| crate::shards::replica_on(&model, d))
                .collect()
        } else {
            Vec::new()
        };
        while done < accum {
            // Ctrl-C mid-step: the model, optimizer and data position are still the last
            // step's, so that is the checkpoint; this step's micro-batches are redone on resume
            // (their time stays spent: the budget is wall clock).
            if control
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst))
            {
                state.elapsed_seconds = elapsed();
                write_checkpoint(work_dir, &state, &metrics, &model, &config, &optim)?;
                return Err(PretrainError::Interrupted {
                    step: state.step,
                    work_dir: work_dir.to_path_buf(),
                });
            }
            // With a wall-clock budget, a micro-batch that would end past the budget is not
            // started (estimated from the last one): a ramped step of many micro-batches
            // would otherwise overrun the budget by up to a whole step.
            if let (None, Some(b), Some(mb_secs)) = (
                resolved.budget_steps,
                resolved.budget_seconds,
                last_micro_batch,
            ) && elapsed() + mb_secs >= b
            {
                budget_spent = true;
                break;
            }
            let mb_start = Instant::now();
            // One micro-batch per device at once (one in all without data parallelism).
            let mut batches = Vec::with_capacity(ads.len());
            while batches.len() < ads.len().min(accum - done) {
                match reader.next_batch() {
                    None => {
                        data_ended = true;
                        break;
                    }
                    Some(r) => batches.push(r?.batch),
                }
            }
            if batches.is_empty() {
                break;
            }
            let scale = 1.0 / accum as f64;
            let results = if batches.len() == 1 {
                let b = &batches[0];
                vec![forward_backward(&model, b, shards(b.rows), scale, &ad)]
            } else {
                let models = std::iter::once(&model).chain(&replicas);
                std::thread::scope(|scope| {
                    let jobs: Vec<_> = batches
                        .iter()
                        .zip(models)
                        .zip(&ads)
                        .map(|((b, m), d)| {
                            scope.spawn(move || forward_backward(m, b, shards(b.rows), scale, d))
                        })
                        .collect();
                    jobs.into_iter()
                        .map(|j| {
                            // The thread's own panic (its message) reaches the stage's report.
                            j.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
                        })
                        .collect::<Vec<_>>()
                })
            };
            for (parts, detached) in results {
                grads.add_shards(parts.into_iter().map(Into::into));
                let detached = detached.to_device(&device);
                loss_sum = Some(match loss_sum {
                    Some(t) => t + detached,
                    None => detached,
                });
                done += 1;
            }
            last_micro_batch = Some(mb_start.elapsed().as_secs_f64());
            if data_ended {
                break;
            }
        }
        if done == 0 {
            break if data_ended {
                StoppedBy::Data
            } else {
                StoppedBy::Budget
            };
        }
        if done < accum {
            // The budget or the data (`max_epochs`) ends mid-accumulation: the last step takes
            // the micro-batches it has, averaged over their own count.
            grads.scale(accum as f64 / done as f64);
        }
        let accum = done;
        // Every micro-batch of the step without a masked position: nothing to learn from, so
        // the parameters and the optimizer stay as they were (as PyTorch's AdamW skips
        // parameters without a gradient); the step still counts for the schedule and budget.
        let grad_norm_now = if grads.is_empty() {
            Tensor::zeros([1], &device)
        } else {
            let (next, report) = optim.step(model, grads, lr);
            model = next;
            report.grad_norm
        };

        state.step += 1;
        state.micro_steps += accum as u64;
        state.sequences += (accum * m) as u64;
        state.tokens += (accum * m * s) as u64;
        state.position += (accum * m) as u64;
        state.last_lr = Some(lr);
        state.elapsed_seconds = elapsed();

        let finishing = budget_spent
            || data_ended
            || resolved.budget_steps.is_some_and(|n| state.step >= n)
            || resolved.budget_tokens.is_some_and(|n| state.tokens >= n)
            || resolved
                .budget_seconds
                .is_some_and(|b| state.elapsed_seconds >= b);
        let eval_now =
            !finishing && resolved.heldout_every > 0 && state.step % resolved.heldout_every == 0;
        let log_now =
            state.step == 1 || state.step % resolved.log_every == 0 || finishing || eval_now;

        // The loss and the gradient norm stay on the device until a step is logged: a read
        // waits for the device, and inside every step it would leave the GPU idle while the
        // host prepares the next one. Host tensors cost nothing to read, so on the CPU every
        // step is read (and a divergence stops the run at the step it happened); on a device
        // the losses of the steps between reads are summed there, and a non-finite sum at the
        // next read stops the run.
        let step_loss = loss_sum.expect("a step ran at least one micro-batch");
        let read = if on_host || log_now {
            let values = read_step_values(step_loss, unread_losses.take(), &grad_norm_now)?;
            Some(values)
        } else {
            unread_losses = Some(match unread_losses.take() {
                Some(sum) => sum + step_loss,
                None => step_loss,
            });
            None
        };
        let mut grad_norm = None;
        if let Some(values) = read {
            let loss = values.loss as f64 / accum as f64;
            if !loss.is_finite() || !values.unread_sum.is_finite() {
                return Err(PretrainError::Diverged {
                    step: state.step,
                    loss: if loss.is_finite() {
                        values.unread_sum as f64
                    } else {
                        loss
                    },
                });
            }
            state.initial_loss.get_or_insert(loss);
            state.last_loss = Some(loss);
            state.smoothed_loss = Some(match state.smoothed_loss {
                Some(sm) => sm + SMOOTHING * (loss - sm),
                None => loss,
            });
            grad_norm = values.grad_norm;
        }
        let loss = state.last_loss.unwrap_or(f64::NAN);

        let since = last_log.0.elapsed().as_secs_f64();
        let tps = if since > 0.0 {
            (state.tokens - last_log.1) as f64 / since
        } else {
            0.0
        };
        let heldout_loss = if eval_now || finishing {
            evaluate(&model)
        } else {
            None
        };
        if log_now {
            metrics.push(MetricsLine {
                step: state.step,
                elapsed_seconds: state.elapsed_seconds,
                tokens: state.tokens,
                loss,
                lr,
                batch_size: accum * m,
                tokens_per_second: tps,
                epochs: epochs(state.sequences),
                heldout_loss,
                grad_norm,
            });
            last_log = (Instant::now(), state.tokens);
        }

        match (resolved.budget_steps, resolved.budget_tokens) {
            (Some(_), _) => progress.set_position(state.step),
            (None, Some(n)) => progress.set_position(state.tokens.min(n)),
            (None, None) => progress.set_position(state.elapsed_seconds as u64),
        }
        let budget_text = match (resolved.budget_steps, resolved.budget_seconds) {
            (Some(n), _) => format!("{}/{} steps", state.step, n),
            (None, None) => format!(
                "{}/{} tokens",
                state.tokens,
                resolved.budget_tokens.unwrap_or_default()
            ),
            (None, Some(b)) => format!(
                "{} of {} ({} left)",
                fmt_duration(state.elapsed_seconds),
                fmt_duration(b),
                fmt_duration(b - state.elapsed_seconds)
            ),
        };
        progress.set_message(format!(
            "step {} | loss {:.4} | lr {:.2e} | bs {} | {:.0} tok/s | epoch {:.2} | {}",
            state.step,
            state.smoothed_loss.unwrap_or(loss),
            lr,
            accum * m,
            tps,
            epochs(state.sequences),
            budget_text
        ));

        let interrupted = control
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
            || control.interrupt_after_steps == Some(state.step);
        let due = checkpoint_every
            .is_some_and(|secs| last_checkpoint.elapsed().as_secs_f64() >= secs)
            || control
                .checkpoint_every_steps
                .is_some_and(|k| k > 0 && state.step % k == 0);
        if (due || interrupted) && !finishing {
            write_checkpoint(work_dir, &state, &metrics, &model, &config, &optim)?;
            last_checkpoint = Instant::now();
        }
        if interrupted && !finishing {
            return Err(PretrainError::Interrupted {
                step: state.step,
                work_dir: work_dir.to_path_buf(),
            });
        }
        if data_ended {
            break StoppedBy::Data;
        }
    };
    reader.join()?;
    let wall_seconds = elapsed();
    // The held-out loss of the final model (measured already when the last step knew it was
    // the last).
    let heldout_loss = match metrics.last() {
        Some(last) if last.step == state.step && last.heldout_loss.is_some() => last.heldout_loss,
        _ if state.step > 0 => evaluate(&model),
        _ => None,
    };

    // The finished entry.
    cram_model::save_mlm(&model, &config, &out_dir.join("model.safetensors"))?;
    cram_model::write_config_json(&config, &out_dir.join("config.json"))?;
    let tok_out = out_dir.join("tokenizer.json");
    std::fs::copy(&tokenizer_path, &tok_out).map_err(|e| PretrainError::io(&tok_out, e))?;
    write_metrics_records(&out_dir.join(checkpoint::METRICS_FILE), &metrics)?;
    let summary = PretrainSummary {
        arch: resolved.arch.clone(),
        parameters,
        budget_seconds: resolved.budget_seconds,
        budget_steps: resolved.budget_steps,
        budget_tokens: resolved.budget_tokens,
        steps: state.step,
        micro_steps: state.micro_steps,
        tokens: state.tokens,
        sequences: state.sequences,
        final_loss: state.last_loss,
        initial_loss: state.initial_loss,
        heldout_loss,
        heldout_rows: heldout.as_ref().map_or(0, |h| h.rows),
        device: devices
            .iter()
            .map(|d| format!("{d:?}"))
            .collect::<Vec<_>>()
            .join(" + "),
        devices: devices.len(),
        backend: backend_name(&device),
        precision: precision.name().into(),
        stopped_by,
        dropout: resolved.dropout,
        epochs: epochs(state.sequences),
        rows,
        max_epochs: resolved.max_epochs,
        final_lr: state.last_lr,
        peak_lr: resolved.lr,
        timings: PretrainTimings {
            wall_seconds,
            peak_memory_bytes: peak_memory_bytes(),
            resumed_from_step,
            timeline: metrics.iter().map(MetricsLine::timeline).collect(),
        },
        log: metrics.clone(),
    };
    let summary_path = out_dir.join("summary.json");
    let json = serde_json::to_string_pretty(&summary)
        .map_err(|e| PretrainError::json(&summary_path, e))?;
    std::fs::write(&summary_path, json + "\n").map_err(|e| PretrainError::io(&summary_path, e))?;
    checkpoint::clear(work_dir)?;
    progress.finish_with_message(format!(
        "{} steps, {} tokens, loss {:.4} ({:?})",
        state.step,
        state.tokens,
        state.last_loss.unwrap_or(f64::NAN),
        stopped_by
    ));
    Ok(summary)
}

/// What a logged step reads back from the device, in one transfer.
struct StepValues {
    /// The step's summed micro-batch losses (divide by the micro-batches for the mean).
    loss: f32,
    /// The sum of the losses of the steps before it that were not read (0 if none): a NaN
    /// there means the run diverged in between.
    unread_sum: f32,
    /// The gradient norm before clipping.
    grad_norm: Option<f64>,
}

/// Reads a step's loss, the losses summed since the last read and the gradient norm with one
/// read (the three joined on the device first).
fn read_step_values(
    loss: Tensor<1>,
    unread: Option<Tensor<1>>,
    grad_norm: &Tensor<1>,
) -> Result<StepValues, PretrainError> {
    let device = loss.device();
    let unread = unread.unwrap_or_else(|| Tensor::zeros([1], &device));
    let joined = Tensor::cat(vec![loss, unread, grad_norm.clone().to_device(&device)], 0);
    let values = host_f32(joined).map_err(|reason| PretrainError::Tensor {
        what: "loss".into(),
        reason,
    })?;
    Ok(StepValues {
        loss: values.first().copied().unwrap_or(f32::NAN),
        unread_sum: values.get(1).copied().unwrap_or(f32::NAN),
        grad_norm: values.get(2).map(|&g| f64::from(g)),
    })
}

/// Writes the output's `metrics.jsonl`: each line's [`MetricsLine::record`].
fn write_metrics_records(path: &Path, metrics: &[MetricsLine]) -> Result<(), PretrainError> {
    let mut text = String::new();
    for m in metrics {
        text.push_str(&m.record().to_string());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| PretrainError::io(path, e))
}

/// Writes a run's timeline as JSON lines (one [`TimelinePoint`] per logged
/// step), e.g. into the cache entry's run directory.
pub fn write_timeline(path: &Path, timeline: &[TimelinePoint]) -> Result<(), PretrainError> {
    let mut text = String::new();
    for t in timeline {
        text.push_str(&serde_json::to_string(t).map_err(|e| PretrainError::json(path, e))?);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| PretrainError::io(path, e))
}

fn write_checkpoint(
    work_dir: &Path,
    state: &TrainState,
    metrics: &[MetricsLine],
    model: &MlmModel,
    config: &ModelConfig,
    optim: &AdamW,
) -> Result<(), PretrainError> {
    checkpoint::save(work_dir, state, metrics, |dir| {
        cram_model::save_mlm(model, config, &dir.join(checkpoint::MODEL_FILE))?;
        Ok(optim.save(&dir.join(checkpoint::OPTIMIZER_FILE))?)
    })?;
    Ok(())
}

/// The batch size the ramp gives at budget fraction `p` for these params (for displays).
pub fn batch_size_at(resolved: &ResolvedPretrain, p: f64) -> usize {
    batch_size(
        p,
        resolved.micro_batch,
        resolved.batch_size,
        resolved.ramp_fraction,
    )
}
