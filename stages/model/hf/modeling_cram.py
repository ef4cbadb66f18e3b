"""A PyTorch version of cram's encoder for Hugging Face `transformers`.

Written by `cram export`. `config.json` names these classes in its `auto_map`:
load them with `AutoModelForMaskedLM`, `AutoModelForSequenceClassification` or
`AutoModel` and `trust_remote_code=True`. The module tree follows the tensor
names of cram's checkpoint contract (`cram-ref-v1`), so `model.safetensors`
loads as cram wrote it, and the forward pass is the one cram trains:

* embedding: word vectors plus positions (a fixed interleaved sinusoid table
  times a learned scalar, or a learned table), plus the first token-type row
  when the model has token types; LayerNorm; dropout;
* layers, pre-norm `x + drop(f(LN(x)))` or post-norm `LN(x + drop(f(x)))`,
  of fused-QKV attention (heads laid out as `[q | k | v]` per head, scores
  scaled after the product, padded keys pushed down by -10000) and a GELU-GLU
  (`a * gelu(g)`) or GELU feed-forward block, exact (erf) GELU throughout;
* an optional final LayerNorm;
* MLM logits: `h E^T` with the word embedding `E` (plus the optional head
  transform and decoder bias); classification: `tanh` pooler on the first
  token, dropout, linear head (one output means regression, MSE loss).

Token-type ids are accepted and ignored, as in cram: inputs carry no segments.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    SequenceClassifierOutput,
)

from .configuration_cram import CramConfig

# The additive attention bias of a padded key.
MASK_BIAS = -10000.0


def sinusoid_table(rows, hidden, device=None):
    """`P[pos, 2j] = sin(pos f_j)`, `P[pos, 2j+1] = cos(pos f_j)`, `f_j = exp(2j (-ln 10000 / H))`,
    in float32 as cram computes it."""
    step = torch.tensor(-math.log(10000.0) / hidden, dtype=torch.float32, device=device)
    freqs = torch.exp(torch.arange(0, hidden, 2, dtype=torch.float32, device=device) * step)
    angles = torch.arange(rows, dtype=torch.float32, device=device)[:, None] * freqs[None, :]
    table = torch.empty(rows, hidden, dtype=torch.float32, device=device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table


class CramEmbedding(nn.Module):
    def __init__(self, config):
        super().__init__()
        h = config.hidden_size
        self.word = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        if config.position_embedding == "scaled-sinusoidal":
            self.pos_scale = nn.Parameter(torch.full((1,), 1.0 / math.sqrt(h)))
            self.pos = None
        else:
            self.pos_scale = None
            self.pos = nn.Embedding(config.max_seq_length, h)
        self.token_type = (
            nn.Embedding(config.type_vocab_size, h) if config.type_vocab_size > 0 else None
        )
        self.norm = nn.LayerNorm(h, eps=config.norm_eps)
        self.dropout = nn.Dropout(config.embedding_dropout)
        self.max_seq_length = config.max_seq_length
        # The sinusoid table is derived, not stored: it is rebuilt per device.
        self._tables = {}

    def positions(self, seq, device):
        if self.pos is not None:
            return self.pos.weight[:seq]
        table = self._tables.get(device)
        if table is None:
            table = sinusoid_table(self.max_seq_length, self.word.embedding_dim, device)
            self._tables[device] = table
        return table[:seq] * self.pos_scale

    def forward(self, input_ids):
        seq = input_ids.shape[1]
        if seq > self.max_seq_length:
            raise ValueError(
                f"sequence of {seq} tokens, longer than the model's {self.max_seq_length}"
            )
        x = self.word(input_ids) + self.positions(seq, input_ids.device)
        if self.token_type is not None:
            x = x + self.token_type.weight[0]
        return self.dropout(self.norm(x))


class CramAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(h, 3 * h, bias=config.dense_bias)
        self.out = nn.Linear(h, h, bias=config.dense_bias)
        self.dropout = nn.Dropout(config.attn_dropout)

    def forward(self, x, bias):
        b, s, h = x.shape
        hd = h // self.num_heads
        qkv = self.qkv(x).view(b, s, self.num_heads, 3 * hd).transpose(1, 2)
        q, k, v = qkv.split(hd, dim=-1)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        if bias is not None:
            scores = scores + bias
        probs = self.dropout(scores.softmax(dim=-1))
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, h)
        return self.out(ctx)


class CramFeedForward(nn.Module):
    def __init__(self, config):
        super().__init__()
        i = config.intermed_size
        self.glu = config.ffn_activation == "gelu-glu"
        self.inp = nn.Linear(config.hidden_size, i, bias=config.dense_bias)
        self.out = nn.Linear(i // 2 if self.glu else i, config.hidden_size, bias=config.dense_bias)

    def forward(self, x):
        y = self.inp(x)
        if self.glu:
            a, g = y.chunk(2, dim=-1)
            return self.out(a * F.gelu(g))
        return self.out(F.gelu(y))


class CramLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        h = config.hidden_size
        self.pre_norm = config.norm_scheme == "pre"
        self.norm1 = nn.LayerNorm(h, eps=config.norm_eps)
        self.attn = CramAttention(config)
        self.norm2 = nn.LayerNorm(h, eps=config.norm_eps)
        self.ffn = CramFeedForward(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x, bias):
        if self.pre_norm:
            x = x + self.dropout(self.attn(self.norm1(x), bias))
            return x + self.dropout(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.dropout(self.attn(x, bias)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class CramEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embedding = CramEmbedding(config)
        self.layers = nn.ModuleList(CramLayer(config) for _ in range(config.num_layers))
        self.final_norm = (
            nn.LayerNorm(config.hidden_size, eps=config.norm_eps) if config.final_norm else None
        )

    def forward(self, input_ids, attention_mask=None):
        x = self.embedding(input_ids)
        bias = None
        if attention_mask is not None:
            keep = attention_mask[:, None, None, :].to(x.dtype)
            bias = (1.0 - keep) * MASK_BIAS
        for layer in self.layers:
            x = layer(x, bias)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x


class CramMlmHead(nn.Module):
    """The optional transform before the tied decoder: dense, GELU, LayerNorm."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)

    def forward(self, x):
        return self.norm(F.gelu(self.dense(x)))


class CramDecoder(nn.Module):
    """Holds the optional decoder bias; the decoder's weight is the word embedding."""

    def __init__(self, config):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))


class CramPreTrainedModel(PreTrainedModel):
    config_class = CramConfig
    # No head model wraps another under a prefix: every class below holds the
    # encoder as `encoder`, as the checkpoint names it.
    base_model_prefix = "cram"
    main_input_name = "input_ids"

    def _init_weights(self, module):
        # cram's initialisation: normal(0, init_std) weights, zero biases,
        # LayerNorm (1, 0), a zero padding row, pos_scale 1/sqrt(H). Tensors
        # loaded from the checkpoint are left alone.
        std = self.config.init_std

        def fill(tensor, how):
            if tensor is not None and not getattr(tensor, "_is_hf_initialized", False):
                with torch.no_grad():
                    how(tensor)

        if isinstance(module, nn.Linear):
            fill(module.weight, lambda t: t.normal_(0.0, std))
            fill(module.bias, lambda t: t.zero_())
        elif isinstance(module, nn.Embedding):
            def embedding(t):
                t.normal_(0.0, std)
                if module.padding_idx is not None:
                    t[module.padding_idx].zero_()

            fill(module.weight, embedding)
        elif isinstance(module, nn.LayerNorm):
            fill(module.weight, lambda t: t.fill_(1.0))
            fill(module.bias, lambda t: t.zero_())
        elif isinstance(module, CramEmbedding) and module.pos_scale is not None:
            h = self.config.hidden_size
            fill(module.pos_scale, lambda t: t.fill_(1.0 / math.sqrt(h)))
        elif isinstance(module, CramDecoder):
            fill(module.bias, lambda t: t.zero_())

    def get_input_embeddings(self):
        return self.encoder.embedding.word

    def set_input_embeddings(self, value):
        self.encoder.embedding.word = value


class CramModel(CramPreTrainedModel):
    """The encoder alone: `last_hidden_state` `[B, S, H]`."""

    def __init__(self, config):
        super().__init__(config)
        self.encoder = CramEncoder(config)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_dict=None, **kwargs):
        hidden = self.encoder(input_ids, attention_mask)
        if return_dict is False:
            return (hidden,)
        return BaseModelOutput(last_hidden_state=hidden)


class CramForMaskedLM(CramPreTrainedModel):
    """Encoder and tied MLM decoder: `logits` `[B, S, V]`; `labels` (-100 = ignored) give the
    mean cross-entropy as `loss`."""

    def __init__(self, config):
        super().__init__(config)
        self.encoder = CramEncoder(config)
        self.mlm_head = CramMlmHead(config) if config.head_transform else None
        self.decoder = CramDecoder(config) if config.decoder_bias else None
        self.post_init()

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        return_dict=None,
        **kwargs,
    ):
        hidden = self.encoder(input_ids, attention_mask)
        if self.mlm_head is not None:
            hidden = self.mlm_head(hidden)
        logits = torch.matmul(hidden, self.encoder.embedding.word.weight.t())
        if self.decoder is not None:
            logits = logits + self.decoder.bias
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
            )
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return MaskedLMOutput(loss=loss, logits=logits)


class CramForSequenceClassification(CramPreTrainedModel):
    """Encoder, `tanh` pooler on the first token and a linear head: `logits` `[B, C]`; with
    `labels`, cross-entropy (or MSE when C = 1) as `loss`."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.encoder = CramEncoder(config)
        self.pooler = nn.Linear(config.hidden_size, config.head_dim)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.head = nn.Linear(config.head_dim, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        return_dict=None,
        **kwargs,
    ):
        hidden = self.encoder(input_ids, attention_mask)
        pooled = self.dropout(torch.tanh(self.pooler(hidden[:, 0])))
        logits = self.head(pooled)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.reshape(-1), labels.to(logits.dtype).reshape(-1))
            else:
                loss = F.cross_entropy(logits, labels.reshape(-1))
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)
