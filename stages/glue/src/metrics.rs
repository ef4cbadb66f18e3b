//! GLUE metrics, computed exactly in f64.
//!
//! Degenerate inputs follow scikit-learn / SciPy where those give a number and return 0 where
//! they would give NaN (a NaN cannot be written to JSON and says nothing a reader can use):
//! Matthews correlation of a constant predictor is 0 (as scikit-learn), F1 with no positive
//! prediction and no positive label is 0 (scikit-learn's `zero_division` default), Pearson and
//! Spearman of a constant series are 0 (SciPy: NaN).

use std::collections::BTreeMap;

/// Fraction of predictions equal to the labels (0 for empty input).
pub fn accuracy(predictions: &[usize], labels: &[usize]) -> f64 {
    check_len(predictions.len(), labels.len());
    if labels.is_empty() {
        return 0.0;
    }
    let hits = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    hits as f64 / labels.len() as f64
}

/// F1 score of the positive class 1: `2 tp / (2 tp + fp + fn)`; 0 when there is neither a
/// positive prediction nor a positive label.
pub fn f1(predictions: &[usize], labels: &[usize]) -> f64 {
    check_len(predictions.len(), labels.len());
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (&p, &l) in predictions.iter().zip(labels) {
        match (p == 1, l == 1) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let denom = 2 * tp + fp + fn_;
    if denom == 0 {
        0.0
    } else {
        (2 * tp) as f64 / denom as f64
    }
}

/// Matthews correlation coefficient, in its multi-class form (Gorodkin 2004; equal to the
/// binary `(tp tn - fp fn) / sqrt(...)`): `(c s - Σ_k p_k t_k) / sqrt((s² - Σ p_k²)(s² - Σ t_k²))`
/// with `c` correct predictions, `s` samples, `p_k`/`t_k` predicted/true counts of class `k`.
/// 0 when either side is constant.
pub fn matthews(predictions: &[usize], labels: &[usize]) -> f64 {
    check_len(predictions.len(), labels.len());
    let classes = predictions
        .iter()
        .chain(labels)
        .copied()
        .max()
        .map_or(0, |m| m + 1);
    let mut pred_count = vec![0f64; classes];
    let mut true_count = vec![0f64; classes];
    let mut correct = 0f64;
    for (&p, &l) in predictions.iter().zip(labels) {
        pred_count[p] += 1.0;
        true_count[l] += 1.0;
        if p == l {
            correct += 1.0;
        }
    }
    let s = labels.len() as f64;
    let pt: f64 = pred_count.iter().zip(&true_count).map(|(p, t)| p * t).sum();
    let pp: f64 = pred_count.iter().map(|p| p * p).sum();
    let tt: f64 = true_count.iter().map(|t| t * t).sum();
    let denom = ((s * s - pp) * (s * s - tt)).sqrt();
    if denom == 0.0 {
        0.0
    } else {
        (correct * s - pt) / denom
    }
}

/// Pearson correlation; 0 when either series is constant (or shorter than 2).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    check_len(x.len(), y.len());
    let n = x.len() as f64;
    if x.len() < 2 {
        return 0.0;
    }
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return 0.0;
    }
    (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0)
}

/// Ranks 1..n with ties given the average of the ranks they span (SciPy's `rankdata`
/// `method="average"`).
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        // Positions i..=j (0-based) hold ranks i+1..=j+1; their mean is (i + j)/2 + 1.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman rank correlation: Pearson of the average ranks (ties averaged).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    check_len(x.len(), y.len());
    pearson(&average_ranks(x), &average_ranks(y))
}

fn check_len(a: usize, b: usize) {
    assert_eq!(a, b, "predictions and labels must have the same length");
}

/// Predictions of one dev split: class ids, or scores for STS-B.
#[derive(Debug, Clone, PartialEq)]
pub enum Predictions {
    /// Class ids with their gold class ids.
    Classes {
        /// Predicted class ids.
        predicted: Vec<usize>,
        /// Gold class ids.
        gold: Vec<usize>,
    },
    /// Regression scores with their gold scores.
    Scores {
        /// Predicted scores.
        predicted: Vec<f64>,
        /// Gold scores.
        gold: Vec<f64>,
    },
}

/// The task's metrics of one split by name (see [`crate::GlueTask::metric_names`]).
pub fn score(task: crate::GlueTask, predictions: &Predictions) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for &name in task.metric_names() {
        let value = match (name, predictions) {
            ("pearson", Predictions::Scores { predicted, gold }) => pearson(predicted, gold),
            ("spearman", Predictions::Scores { predicted, gold }) => spearman(predicted, gold),
            ("matthews", Predictions::Classes { predicted, gold }) => matthews(predicted, gold),
            ("f1", Predictions::Classes { predicted, gold }) => f1(predicted, gold),
            ("accuracy", Predictions::Classes { predicted, gold }) => accuracy(predicted, gold),
            (name, p) => panic!("metric {name} does not apply to {p:?}"),
        };
        out.insert(name.to_string(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn accuracy_and_f1_by_hand() {
        // tp = 2 (rows 0, 1), fp = 1 (row 2), fn = 1 (row 3), tn = 2 (rows 4, 5).
        let p = [1, 1, 1, 0, 0, 0];
        let l = [1, 1, 0, 1, 0, 0];
        close(accuracy(&p, &l), 4.0 / 6.0);
        close(f1(&p, &l), 4.0 / 6.0); // 2*2 / (2*2 + 1 + 1)
        close(f1(&[0, 0], &[0, 0]), 0.0);
        close(f1(&[1, 1], &[1, 1]), 1.0);
        close(accuracy(&[], &[]), 0.0);
    }

    #[test]
    fn matthews_by_hand() {
        let p = [1, 1, 1, 0, 0, 0];
        let l = [1, 1, 0, 1, 0, 0];
        // (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (4 - 1) / sqrt(3*3*3*3) = 1/3
        close(matthews(&p, &l), 1.0 / 3.0);
        close(matthews(&l, &l), 1.0);
        close(matthews(&[1, 0, 1, 0], &[0, 1, 0, 1]), -1.0);
        // A constant predictor gives 0, not NaN; so does a constant label set.
        close(matthews(&[1, 1, 1, 1], &[1, 0, 1, 0]), 0.0);
        close(matthews(&[0, 1, 0, 1], &[1, 1, 1, 1]), 0.0);
        // Three classes: confusion rows (true) x cols (pred) = [[2,1,0],[0,1,1],[1,0,2]].
        let l3 = [0, 0, 0, 1, 1, 2, 2, 2];
        let p3 = [0, 0, 1, 1, 2, 0, 2, 2];
        // c = 5, s = 8, p = (3,2,3), t = (3,2,3): (40 - 22) / sqrt((64-22)(64-22)) = 18/42
        close(matthews(&p3, &l3), 18.0 / 42.0);
    }

    #[test]
    fn pearson_and_spearman_by_hand() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let y = [2.0, 4.0, 6.0, 8.5];
        // mean x 2.5, mean y 5.125; dx = (-1.5,-.5,.5,1.5), dy = (-3.125,-1.125,.875,3.375)
        // sxy = 4.6875+.5625+.4375+5.0625 = 10.75, sxx = 5, syy = 9.765625+1.265625+.765625+11.390625 = 23.1875
        close(pearson(&x, &y), 10.75 / (5.0f64.sqrt() * 23.1875f64.sqrt()));
        close(spearman(&x, &y), 1.0);
        close(pearson(&x, &[3.0; 4]), 0.0);
        close(spearman(&[3.0; 4], &x), 0.0);
        close(pearson(&[1.0], &[2.0]), 0.0);
    }

    #[test]
    fn spearman_averages_tied_ranks() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 20.0, 5.0]),
            vec![2.0, 3.5, 3.5, 1.0]
        );
        assert_eq!(average_ranks(&[1.0, 1.0, 1.0]), vec![2.0, 2.0, 2.0]);
        // x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4): dx = (-1.5, 0, 0, 1.5), dy = (-1.5,-.5,.5,1.5)
        // sxy = 4.5, sxx = 4.5, syy = 5 -> 4.5 / sqrt(22.5)
        let rho = spearman(&[0.1, 0.5, 0.5, 0.9], &[1.0, 2.0, 3.0, 4.0]);
        close(rho, 4.5 / 22.5f64.sqrt());
    }

    #[test]
    fn score_names_per_task() {
        use crate::GlueTask;
        let classes = Predictions::Classes {
            predicted: vec![1, 0, 1],
            gold: vec![1, 0, 0],
        };
        let m = score(GlueTask::Mrpc, &classes);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["accuracy", "f1"]);
        close(m["f1"], 2.0 / 3.0);
        let m = score(GlueTask::Cola, &classes);
        close(m["matthews"], 0.5);
        let scores = Predictions::Scores {
            predicted: vec![1.0, 2.0, 3.0],
            gold: vec![1.0, 3.0, 2.0],
        };
        let m = score(GlueTask::Stsb, &scores);
        close(m["pearson"], 0.5);
        close(m["spearman"], 0.5);
    }
}
