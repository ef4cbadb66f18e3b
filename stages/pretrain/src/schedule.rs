//! Learning-rate schedules and the batch-size ramp, as functions of `p`, the elapsed fraction of
//! the budget (wall clock, or optimizer steps for a step budget).
//!
//! The reference (cramming's `backend/optimizers/schedulers.py`, `torch_default.py`) evaluates
//! them on a "fake step" `int(p * steps)` with `steps = 900_000`; we use `p` itself, which is the
//! same function without the quantisation to 1/900000.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A learning-rate schedule: the factor applied to the base learning rate at budget fraction `p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LrSchedule {
    /// `min(0.25 + p, 4 (1 - p))`: from 25 % linearly up to the peak at `p = 0.75`, then
    /// linearly down to 0 at the end of the budget (cramming's `get_budget_triangle` with
    /// `base_percentage = 0.25`, `falloff = 0.25`; the `bert-o4` schedule).
    #[serde(rename = "budget-triangle2")]
    BudgetTriangle2,
    /// A constant learning rate (no warm-up, no cooldown).
    #[serde(rename = "constant")]
    Constant,
    /// Linear decay `1 - p` from the base rate to 0, no warm-up (cramming's `budget-linear`
    /// with `warmup_steps = 0`, the `bert-o4` setting).
    #[serde(rename = "linear")]
    Linear,
    /// Half-cosine decay `0.5 (1 + cos(pi p))` from the base rate to 0, no warm-up (cramming's
    /// `budget-cosine-decay` with `warmup_steps = 0`).
    #[serde(rename = "cosine")]
    Cosine,
}

impl LrSchedule {
    /// The factor of the base learning rate at budget fraction `p` (clamped to `[0, 1]`).
    pub fn factor(self, p: f64) -> f64 {
        let p = p.clamp(0.0, 1.0);
        match self {
            LrSchedule::BudgetTriangle2 => (0.25 + p).min(4.0 * (1.0 - p)).max(0.0),
            LrSchedule::Constant => 1.0,
            LrSchedule::Linear => 1.0 - p,
            LrSchedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
        }
    }

    /// The learning rate at budget fraction `p` for base rate `lr0`.
    pub fn lr(self, lr0: f64, p: f64) -> f64 {
        lr0 * self.factor(p)
    }

    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            LrSchedule::BudgetTriangle2 => "budget-triangle2",
            LrSchedule::Constant => "constant",
            LrSchedule::Linear => "linear",
            LrSchedule::Cosine => "cosine",
        }
    }
}

/// The batch-size ramp: `bs(p) = min(m (floor(p B / rho / m) + 1), B)` sequences, a multiple
/// of the micro-batch `m` that starts at `m` and reaches the target `B` at `p = rho`
/// (cramming's `schedule_batch_size` with a fractional `batch_size_ramp`). `rho <= 0` or
/// `rho >= 1` disables the ramp: the batch is `B` from the start, as in the reference.
///
/// `B` is rounded up to a whole number of micro-batches.
pub fn batch_size(p: f64, micro_batch: usize, target: usize, rho: f64) -> usize {
    let m = micro_batch.max(1);
    let target = target.max(1).div_ceil(m) * m;
    if !(rho > 0.0 && rho < 1.0) {
        return target;
    }
    let p = p.clamp(0.0, 1.0);
    let k = (p * target as f64 / rho / m as f64).floor() as usize + 1;
    (m * k).min(target)
}

/// Micro-batches accumulated into the optimizer step at budget fraction `p`.
pub fn accumulation_steps(p: f64, micro_batch: usize, target: usize, rho: f64) -> usize {
    batch_size(p, micro_batch, target, rho) / micro_batch.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn triangle2_by_hand() {
        let s = LrSchedule::BudgetTriangle2;
        close(s.factor(0.0), 0.25);
        close(s.factor(0.3), 0.55);
        close(s.factor(0.6), 0.85);
        close(s.factor(0.75), 1.0);
        close(s.factor(0.9), 0.4);
        close(s.factor(1.0), 0.0);
        close(s.lr(1e-3, 0.3), 5.5e-4);
    }

    #[test]
    fn linear_cosine_constant_by_hand() {
        let ps = [0.0, 0.3, 0.6, 0.75, 1.0];
        let lin = [1.0, 0.7, 0.4, 0.25, 0.0];
        // 0.5 (1 + cos(pi p)): cos(0.3 pi) = 0.587785..., cos(0.6 pi) = -0.309017...,
        // cos(0.75 pi) = -0.707106...
        let cos = [
            1.0,
            0.7938926261462366,
            0.3454915028125263,
            0.1464466094067262,
            0.0,
        ];
        for (i, p) in ps.iter().enumerate() {
            close(LrSchedule::Linear.factor(*p), lin[i]);
            close(LrSchedule::Cosine.factor(*p), cos[i]);
            close(LrSchedule::Constant.factor(*p), 1.0);
        }
    }

    #[test]
    fn ramp_by_hand() {
        // bert-o4: B = 8192, rho = 0.6, m = 128.
        let bs = |p| batch_size(p, 128, 8192, 0.6);
        assert_eq!(bs(0.0), 128);
        // 0.3 * 8192 / 0.6 = 4096 -> floor(4096 / 128) + 1 = 33 -> 4224.
        assert_eq!(bs(0.3), 4224);
        // 0.6 * 8192 / 0.6 = 8192 (up to rounding) -> capped at 8192.
        assert_eq!(bs(0.6), 8192);
        assert_eq!(bs(0.75), 8192);
        assert_eq!(bs(1.0), 8192);
        // m = 8: 0.3 -> 4096 / 8 + 1 = 513 micro-batches.
        assert_eq!(batch_size(0.3, 8, 8192, 0.6), 4104);
        assert_eq!(accumulation_steps(0.3, 8, 8192, 0.6), 513);
        // A small ramp: B = 64, m = 8, p = 0.1 -> 0.1 * 64 / 0.6 = 10.67 -> 1 + 1 = 2 -> 16.
        assert_eq!(batch_size(0.1, 8, 64, 0.6), 16);
        // No ramp.
        assert_eq!(batch_size(0.0, 8, 64, 0.0), 64);
        // B not a multiple of m is rounded up.
        assert_eq!(batch_size(1.0, 8, 60, 0.6), 64);
    }

    #[test]
    fn names_round_trip() {
        for s in [
            LrSchedule::BudgetTriangle2,
            LrSchedule::Constant,
            LrSchedule::Linear,
            LrSchedule::Cosine,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
            assert_eq!(serde_json::from_str::<LrSchedule>(&json).unwrap(), s);
        }
    }
}
