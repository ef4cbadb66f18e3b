//! The scaling-law view of a run: its loss against training compute
//! (`C = 6 × parameters × tokens`, the usual estimate of a dense
//! transformer's FLOPs) fitted as a power law `L = a · C^(−b)` by least
//! squares in log-log space, and that law taken out to the Cramming budget.
//!
//! The held-out loss is fitted where the run measured it at three points or
//! more (it is the less noisy curve); otherwise the training loss. The first
//! fifth of the curve is left out: the loss falls faster there than any
//! power law, before the model settles into the regime the law describes.

use crate::data::Pretrain;
use crate::fmt;

/// A fitted power law `loss = a · compute^(−b)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerLaw {
    /// The scale `a`.
    pub a: f64,
    /// The exponent `b` (positive when the loss falls with compute).
    pub b: f64,
    /// Coefficient of determination of the log-log line.
    pub r2: f64,
    /// Points fitted.
    pub points: usize,
}

impl PowerLaw {
    /// The law's loss at `compute`.
    pub fn at(&self, compute: f64) -> f64 {
        self.a * compute.powf(-self.b)
    }
}

/// Fits `y = a · x^(−b)` to the points with `x > 0` and `y > 0`; `None`
/// with fewer than three such points or no spread in `x`.
pub fn fit_power_law(points: &[(f64, f64)]) -> Option<PowerLaw> {
    let logs: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0 && x.is_finite() && y.is_finite())
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    let n = logs.len();
    if n < 3 {
        return None;
    }
    let mx = logs.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let my = logs.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let sxx: f64 = logs.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = logs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ss_tot: f64 = logs.iter().map(|p| (p.1 - my).powi(2)).sum();
    let ss_res: f64 = logs
        .iter()
        .map(|p| (p.1 - (intercept + slope * p.0)).powi(2))
        .sum();
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        1.0
    };
    Some(PowerLaw {
        a: intercept.exp(),
        b: -slope,
        r2,
        points: n,
    })
}

/// Which loss a fit used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// The held-out loss (fixed masks).
    Heldout,
    /// The training loss.
    Training,
}

/// The fit of a pretraining run, with the curve it used.
pub fn fit_run(p: &Pretrain) -> Option<(PowerLaw, Curve)> {
    let params = crate::data::num(&p.summary, "parameters")?;
    let curve = |pick: fn(&crate::data::MetricPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        let all: Vec<(f64, f64)> = p
            .points
            .iter()
            .filter_map(|m| Some((6.0 * params * m.tokens?, pick(m)?)))
            .collect();
        let skip = all.len() / 5;
        all[skip..].to_vec()
    };
    let heldout = curve(|m| m.heldout_loss);
    if let Some(f) = fit_power_law(&heldout) {
        return Some((f, Curve::Heldout));
    }
    fit_power_law(&curve(|m| m.loss)).map(|f| (f, Curve::Training))
}

/// The Cramming budget the fit is taken out to, in seconds.
const CRAMMING_SECONDS: f64 = 24.0 * 3600.0;

/// The report's sentence on a run's fit: the law, its quality, and the loss
/// it predicts at the run's own compute and at 24 hours at the run's mean
/// throughput.
pub fn describe(p: &Pretrain) -> String {
    let Some((law, curve)) = fit_run(p) else {
        return "no fit (fewer than three logged points past the first fifth of the curve)"
            .to_string();
    };
    let which = match curve {
        Curve::Heldout => "held-out",
        Curve::Training => "training",
    };
    let params = crate::data::num(&p.summary, "parameters").unwrap_or(0.0);
    let tokens = crate::data::num(&p.summary, "tokens").unwrap_or(0.0);
    let mut text = format!(
        "{which} loss ≈ {} · C^−{:.4} (C = 6 × parameters × tokens; R² {:.3} over {} points)",
        fmt::number(law.a),
        law.b,
        law.r2,
        law.points
    );
    if let Some(wall) = p.wall_seconds().filter(|w| *w > 0.0 && tokens > 0.0) {
        let c24 = 6.0 * params * tokens / wall * CRAMMING_SECONDS;
        text.push_str(&format!(
            "; at 24 h of this run's throughput (C = {:.3e}) it predicts {} (a power law's guess: the schedule and the batch ramp would differ)",
            c24,
            fmt::number(law.at(c24))
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_known_exponents() {
        for (a, b) in [(3.0, 0.07), (12.0, 0.3), (1.5, 0.01)] {
            let points: Vec<(f64, f64)> = (1..=40)
                .map(|i| {
                    let x = 1e12 * 1.3f64.powi(i);
                    (x, a * x.powf(-b))
                })
                .collect();
            let f = fit_power_law(&points).unwrap();
            assert!((f.b - b).abs() < 1e-9, "{f:?}");
            assert!((f.a - a).abs() / a < 1e-6, "{f:?}");
            assert!(f.r2 > 1.0 - 1e-12);
            assert!((f.at(1e20) - a * 1e20f64.powf(-b)).abs() < 1e-9);
        }
    }

    #[test]
    fn noisy_curves_give_the_exponent_approximately() {
        // Multiplicative noise of ±2 %, deterministic.
        let points: Vec<(f64, f64)> = (1..=200)
            .map(|i| {
                let x = 1e10 * (i as f64);
                let noise = 1.0 + 0.02 * ((i * 7919 % 13) as f64 / 6.0 - 1.0);
                (x, 8.0 * x.powf(-0.12) * noise)
            })
            .collect();
        let f = fit_power_law(&points).unwrap();
        assert!((f.b - 0.12).abs() < 0.01, "{f:?}");
        assert!(f.r2 > 0.9, "{f:?}");
    }

    #[test]
    fn too_few_or_degenerate_points_give_no_fit() {
        assert!(fit_power_law(&[(1.0, 2.0), (2.0, 1.0)]).is_none());
        assert!(fit_power_law(&[(5.0, 2.0), (5.0, 1.0), (5.0, 3.0)]).is_none());
        assert!(fit_power_law(&[(0.0, 2.0), (-1.0, 1.0), (1.0, -3.0)]).is_none());
    }
}
