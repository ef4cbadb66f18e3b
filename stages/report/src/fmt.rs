//! Number formatting for people.

/// What a missing value shows as.
pub const NA: &str = "n/a";

/// An integer with thousands separators: `1234567` → `1,234,567`.
pub fn int(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let rounded = x.round();
    let negative = rounded < 0.0;
    let digits = format!("{:.0}", rounded.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if negative { format!("-{out}") } else { out }
}

/// A number of any size, compactly: integers with separators, others with
/// four significant digits (scientific for tiny or huge values).
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return int(x);
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{x:.3e}");
    }
    let decimals = if a >= 1000.0 {
        1
    } else if a >= 100.0 {
        2
    } else if a >= 1.0 {
        3
    } else {
        4
    };
    format!("{x:.decimals$}")
}

/// Bytes in binary units: `1536` → `1.50 KiB (1,536 B)`.
pub fn bytes(x: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = x;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{} B", int(x))
    } else {
        format!("{v:.2} {} ({} B)", UNITS[unit], int(x))
    }
}

/// A duration: `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return NA.to_string();
    }
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let total = seconds.round() as u64;
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    if h == 0 {
        format!("{m} min {s:02} s")
    } else {
        format!("{h} h {m:02} min")
    }
}

/// A fraction as a percentage: `0.0123` → `1.23 %`.
pub fn percent(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

/// A GLUE score (fraction) on the paper's scale: `0.8391` → `83.9`.
pub fn score(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

/// Formats an optional value, `n/a` when missing.
pub fn opt(x: Option<f64>, f: fn(f64) -> String) -> String {
    x.map_or_else(|| NA.to_string(), f)
}

/// A metric value formatted by what its key suggests (bytes, seconds,
/// rates, counts).
pub fn by_key(key: &str, x: f64) -> String {
    let k = key.to_ascii_lowercase();
    if k.contains("bytes") {
        bytes(x)
    } else if k.ends_with("seconds") || k.ends_with("_secs") {
        duration(x)
    } else if k.ends_with("rate") || k.ends_with("fraction") || k.ends_with("ratio") {
        if (0.0..=1.0).contains(&x) {
            percent(x)
        } else {
            number(x)
        }
    } else {
        number(x)
    }
}

/// A friendly label for a metric key; unknown keys get their underscores
/// turned into spaces.
pub fn label(key: &str) -> String {
    let known = match key {
        "documents" => "documents",
        "documents_in" => "documents in",
        "documents_out" => "documents out",
        "documents_removed" => "documents removed",
        "documents_dropped" => "documents dropped",
        "bytes" => "bytes",
        "bytes_in" => "bytes in",
        "bytes_out" => "bytes out",
        "bytes_removed" => "bytes removed",
        "dedup_bytes_removed" => "bytes removed by dedup",
        "removed_bytes" => "bytes removed",
        "duplicate_bytes" => "duplicate bytes",
        "unk_rate" => "UNK rate",
        "unk_tokens" => "UNK tokens",
        "rows" => "packed rows",
        "sequences" => "sequences",
        "seq_length" => "sequence length",
        "vocab_size" => "vocabulary size",
        "tokens" => "tokens",
        "tokens_in" => "tokens in",
        "tokens_out" => "tokens out",
        "shards" => "shards",
        "files" => "files",
        "examples" => "examples",
        "trash_cutoff" => "trash cutoff",
        "min_length" => "minimum repeat length",
        _ => "",
    };
    if known.is_empty() {
        key.replace('_', " ")
    } else {
        known.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(int(1234567.0), "1,234,567");
        assert_eq!(int(-1000.0), "-1,000");
        assert_eq!(int(12.0), "12");
        assert_eq!(number(0.12345), "0.1235");
        assert_eq!(number(2.0e-5), "2.000e-5");
        assert_eq!(bytes(1536.0), "1.50 KiB (1,536 B)");
        assert_eq!(bytes(10.0), "10 B");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(245.0), "4 min 05 s");
        assert_eq!(duration(86400.0), "24 h 00 min");
        assert_eq!(score(0.8391), "83.9");
        assert_eq!(by_key("unk_rate", 0.0123), "1.23 %");
        assert_eq!(by_key("bytes_out", 2048.0), "2.00 KiB (2,048 B)");
        assert_eq!(label("unk_rate"), "UNK rate");
        assert_eq!(label("weird_key"), "weird key");
    }
}
