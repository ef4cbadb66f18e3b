//! The one table of tensor names of the `cram-ref-v1` checkpoint contract.
//!
//! Every module builds its parameters through these functions and lists them under the same
//! names, so the save path, the load path and the optimiser's naming cannot drift apart.
//! Names beyond the contract (biases and extra tables of `bert-original`) follow the same
//! scheme: a `.bias` beside its `.weight`.

/// Word embedding `[V, H]` (also the tied MLM decoder).
pub const WORD: &str = "encoder.embedding.word.weight";
/// Learnable scale `[1]` of the sinusoid table.
pub const POS_SCALE: &str = "encoder.embedding.pos_scale";
/// Learned position table `[max_seq_length, H]` (`bert-original` only).
pub const POS_LEARNED: &str = "encoder.embedding.pos.weight";
/// Token-type table `[type_vocab_size, H]` (`bert-original` only).
pub const TOKEN_TYPE: &str = "encoder.embedding.token_type.weight";
/// Embedding LayerNorm prefix (`.weight` / `.bias`).
pub const EMB_NORM: &str = "encoder.embedding.norm";
/// Final LayerNorm prefix.
pub const FINAL_NORM: &str = "encoder.final_norm";
/// MLM head transform dense prefix (`bert-original` only).
pub const HEAD_TRANSFORM_DENSE: &str = "mlm_head.dense";
/// MLM head transform LayerNorm prefix (`bert-original` only).
pub const HEAD_TRANSFORM_NORM: &str = "mlm_head.norm";
/// Decoder bias `[V]` (`bert-original` only).
pub const DECODER_BIAS: &str = "decoder.bias";
/// Classification pooler dense prefix (`pooler.weight` `[D, H]`, `pooler.bias` `[D]`).
pub const POOLER: &str = "pooler";
/// Classification head prefix (`head.weight` `[C, D]`, `head.bias` `[C]`).
pub const HEAD: &str = "head";

/// Prefix of layer `i`'s tensors.
pub fn layer(i: usize) -> String {
    format!("encoder.layers.{i}")
}
/// Fused QKV dense prefix of layer `i`.
pub fn qkv(i: usize) -> String {
    format!("encoder.layers.{i}.attn.qkv")
}
/// Attention output dense prefix of layer `i`.
pub fn attn_out(i: usize) -> String {
    format!("encoder.layers.{i}.attn.out")
}
/// FFN input dense prefix of layer `i`.
pub fn ffn_in(i: usize) -> String {
    format!("encoder.layers.{i}.ffn.inp")
}
/// FFN output dense prefix of layer `i`.
pub fn ffn_out(i: usize) -> String {
    format!("encoder.layers.{i}.ffn.out")
}
/// Pre-attention (pre-norm) / post-attention (post-norm) LayerNorm prefix of layer `i`.
pub fn norm1(i: usize) -> String {
    format!("encoder.layers.{i}.norm1")
}
/// Pre-FFN (pre-norm) / post-FFN (post-norm) LayerNorm prefix of layer `i`.
pub fn norm2(i: usize) -> String {
    format!("encoder.layers.{i}.norm2")
}
/// `{prefix}.weight`.
pub fn weight(prefix: &str) -> String {
    format!("{prefix}.weight")
}
/// `{prefix}.bias`.
pub fn bias(prefix: &str) -> String {
    format!("{prefix}.bias")
}

/// Whether the AdamW weight decay of the reference applies to the named parameter: every
/// parameter except those whose name contains `bias` or `norm`.
pub fn decays(name: &str) -> bool {
    !(name.contains("bias") || name.contains("norm"))
}
