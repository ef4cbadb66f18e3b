//! A generic adapter for kinds whose parameters need no expansion and whose
//! identity is their parameters: most of them.

use std::marker::PhantomData;

use anyhow::Result;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::registry::{
    Artifact, InputSlot, Kind, ParamError, Params, Shards, StageContext, parse_typed, plain_params,
    to_json,
};

/// A stage library's check of parameters that no input can make right: `Err` holds the reason.
pub type ParamCheck<P> = fn(&P) -> Result<(), String>;

/// A kind described by plain data and one run function.
pub struct Simple<P> {
    /// `kind = "..."` name.
    pub name: &'static str,
    /// One line for `cram kinds`.
    pub about: &'static str,
    /// The stage library's code version.
    pub code_version: u32,
    /// Whether the seed changes the output.
    pub uses_seed: bool,
    /// What it writes.
    pub output: Artifact,
    /// What it reads.
    pub inputs: &'static [InputSlot],
    /// Runs the stage with typed parameters; returns its summary as JSON.
    pub run: fn(&StageContext<'_>, &P) -> Result<Value>,
    /// Its split into shards, if it splits (see [`Kind::shards`]).
    pub shards: Option<&'static dyn Shards>,
    /// The stage library's check of values no input can make right, run when the pipeline
    /// loads (`status`, `dag` and `--dry-run` report them, not only `run`). Its reason names
    /// the key first (`"...: seq_length = 0 must be ..."`), which places the error on that key.
    pub check: Option<ParamCheck<P>>,
    /// Marks the parameter type.
    pub params: PhantomData<fn() -> P>,
}

impl<P> Kind for Simple<P>
where
    P: DeserializeOwned + Serialize + JsonSchema,
{
    fn name(&self) -> &'static str {
        self.name
    }
    fn about(&self) -> &'static str {
        self.about
    }
    fn code_version(&self) -> u32 {
        self.code_version
    }
    fn uses_seed(&self, _params: &Params) -> bool {
        self.uses_seed
    }
    fn output(&self) -> Artifact {
        self.output
    }
    fn inputs(&self) -> &'static [InputSlot] {
        self.inputs
    }
    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(P)
    }
    fn params(&self, table: toml::Value) -> Result<Params, ParamError> {
        let Some(check) = self.check else {
            return plain_params::<P>(table);
        };
        let typed: P = parse_typed(table.clone())?;
        check(&typed).map_err(|message| {
            // "invalid pack parameters: seq_length = 0 ...": the key opens the reason.
            let reason = message
                .split_once(": ")
                .map_or(message.as_str(), |(_, r)| r);
            let key: String = reason
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let path = if table.get(&key).is_some() {
                vec![key]
            } else {
                Vec::new()
            };
            ParamError { path, message }
        })?;
        let json = to_json(&typed);
        Ok(Params {
            raw: json.clone(),
            resolved: json,
        })
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<Value> {
        let params: P = ctx.typed()?;
        (self.run)(ctx, &params)
    }
    fn shards(&self) -> Option<&dyn Shards> {
        self.shards
    }
}

/// Serializes a stage summary for the manifest.
pub fn summary<S: Serialize>(s: &S) -> Result<Value> {
    Ok(serde_json::to_value(s)?)
}

/// The manifest's metrics of a stage whose summary keeps its timings out of
/// the hashed output: the summary with `timings` added under that key (the
/// report reads them there).
pub fn summary_with_timings<S: Serialize, T: Serialize>(s: &S, timings: &T) -> Result<Value> {
    let mut v = summary(s)?;
    if let Value::Object(map) = &mut v {
        map.insert("timings".into(), serde_json::to_value(timings)?);
    }
    Ok(v)
}
