//! Floats that come back from a checkpoint as the very same `f64`.
//!
//! serde_json's default number parser is fast but not correctly rounded: a number it wrote
//! (the shortest text that reads back exactly) can come back one unit in the last place off
//! (`1.8008759021759033` read as `1.800875902175903`). A resumed run would then write other
//! digits into its outputs than an uninterrupted one. The exact parser is a serde_json feature
//! (`float_roundtrip`) that every crate in the build would get, so the checkpoint's floats are
//! written as strings instead, in Rust's shortest round-trip form, and read with `str::parse`,
//! which is correctly rounded. Numbers (checkpoints of earlier versions) are still read.

use serde::{Deserialize, Deserializer, Serializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Text(String),
    Number(f64),
}

fn parse<E: serde::de::Error>(w: Written) -> Result<f64, E> {
    match w {
        Written::Text(t) => t
            .parse()
            .map_err(|_| E::custom(format!("not a number: {t:?}"))),
        Written::Number(n) => Ok(n),
    }
}

/// `#[serde(with = "exact_f64")]` for an `f64` field.
pub mod exact_f64 {
    use super::*;

    /// Writes `v` as its shortest round-trip text.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// Reads the text (or a number, from older checkpoints).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        parse(Written::deserialize(d)?)
    }
}

/// `#[serde(with = "exact_opt_f64")]` for an `Option<f64>` field.
pub mod exact_opt_f64 {
    use super::*;

    /// Writes `Some(v)` as its shortest round-trip text, `None` as null.
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&v.to_string()),
            None => s.serialize_none(),
        }
    }

    /// Reads the text, a number (older checkpoints) or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<Written>::deserialize(d)?
            .map(parse::<D::Error>)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Line {
        #[serde(with = "exact_f64")]
        a: f64,
        #[serde(with = "exact_opt_f64", default)]
        b: Option<f64>,
    }

    #[test]
    fn every_value_comes_back_bit_for_bit() {
        // f32 values widened to f64 (losses and norms read from a device) and f64 ratios: the
        // kinds of numbers a checkpoint holds. serde_json's default parser misses some of them.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut plain_misses = 0;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f =
                f32::from_bits(0x3f80_0000 | (x as u32 & 0x007f_ffff)) as f64 * (i % 7 + 1) as f64;
            let g = (x >> 11) as f64 / (1u64 << 53) as f64;
            let line = Line { a: f, b: Some(g) };
            let text = serde_json::to_string(&line).unwrap();
            let back: Line = serde_json::from_str(&text).unwrap();
            assert_eq!(back.a.to_bits(), f.to_bits(), "{text}");
            assert_eq!(back.b.unwrap().to_bits(), g.to_bits(), "{text}");
            let plain: f64 = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
            plain_misses += usize::from(plain.to_bits() != f.to_bits());
        }
        eprintln!("serde_json's default parser missed {plain_misses} of 20000");
        for v in [f64::NAN, f64::INFINITY, -0.0, 1e-300, 0.1 + 0.2] {
            let text = serde_json::to_string(&Line { a: v, b: None }).unwrap();
            let back: Line = serde_json::from_str(&text).unwrap();
            assert_eq!(back.a.to_bits(), v.to_bits(), "{text}");
            assert_eq!(back.b, None);
        }
        // A checkpoint written with plain numbers still reads.
        let old: Line = serde_json::from_str(r#"{"a": 2.5, "b": null}"#).unwrap();
        assert_eq!(old, Line { a: 2.5, b: None });
    }
}
