//! The `cosine-decay` learning-rate schedule of `GLUE_sane`.
//!
//! The reference builds Hugging Face's `get_cosine_schedule_with_warmup` with
//! `num_warmup_steps = int(0.1 * steps)` and `num_cycles = 0.5` behind PyTorch's `LambdaLR`, so
//! the update with 0-based index `k` uses `lr0 * factor(k)`:
//! `k / max(1, w)` while `k < w`, then `max(0, 0.5 (1 + cos(π (k - w) / max(1, T - w))))`.

/// Linear warm-up followed by a half-cosine decay to 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineSchedule {
    /// The peak learning rate.
    pub peak: f64,
    /// Warm-up updates `w`.
    pub warmup_steps: usize,
    /// Total updates `T`.
    pub total_steps: usize,
}

impl CosineSchedule {
    /// The schedule for `total_steps` updates with `int(warmup_fraction * total_steps)` warm-up
    /// updates (Python's `int`, i.e. truncation).
    pub fn new(peak: f64, warmup_fraction: f64, total_steps: usize) -> Self {
        Self {
            peak,
            warmup_steps: (warmup_fraction * total_steps as f64) as usize,
            total_steps,
        }
    }

    /// The multiplier of the peak at update `step` (0-based).
    pub fn factor(&self, step: usize) -> f64 {
        let w = self.warmup_steps;
        if step < w {
            return step as f64 / w.max(1) as f64;
        }
        let progress = (step - w) as f64 / self.total_steps.saturating_sub(w).max(1) as f64;
        (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
    }

    /// The learning rate of update `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        self.peak * self.factor(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = CosineSchedule::new(1.0, 0.1, 100);
        assert_eq!(s.warmup_steps, 10);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.5).abs() < 1e-15);
        assert_eq!(s.lr(10), 1.0);
        // Half-way through the decay: cos(π/2) = 0 -> 0.5.
        assert!((s.lr(55) - 0.5).abs() < 1e-12);
        assert!(s.lr(99) > 0.0 && s.lr(99) < 0.001);
        assert!(s.lr(100).abs() < 1e-15);
        // int(0.1 * 7) = 0: no warm-up, full rate at the first update.
        let short = CosineSchedule::new(2.0, 0.1, 7);
        assert_eq!(short.warmup_steps, 0);
        assert_eq!(short.lr(0), 2.0);
    }
}
