"""Configuration of a cram encoder for Hugging Face `transformers`.

Written by `cram export` beside `modeling_cram.py`; `config.json` names this
class in its `auto_map`, so `AutoConfig.from_pretrained(DIR,
trust_remote_code=True)` builds it. The fields are those of cram's model config
(`cram show` prints them for a stage); the usual `transformers` names
(`num_hidden_layers`, `intermediate_size`, ...) are aliases of them.
"""

from transformers import PretrainedConfig


class CramConfig(PretrainedConfig):
    """The architecture of a crammed-BERT-style encoder and its heads."""

    model_type = "cram-bert"
    attribute_map = {
        "num_hidden_layers": "num_layers",
        "num_attention_heads": "num_heads",
        "intermediate_size": "intermed_size",
        "max_position_embeddings": "max_seq_length",
        "layer_norm_eps": "norm_eps",
        "initializer_range": "init_std",
        "hidden_dropout_prob": "hidden_dropout",
        "attention_probs_dropout_prob": "attn_dropout",
    }

    def __init__(
        self,
        vocab_size=32768,
        hidden_size=768,
        num_layers=16,
        num_heads=12,
        intermed_size=3072,
        max_seq_length=128,
        norm_eps=1e-12,
        pad_token_id=0,
        hidden_dropout=0.1,
        attn_dropout=0.1,
        embedding_dropout=0.1,
        init_std=0.02,
        sparse_prediction=0.25,
        head_dim=1024,
        classifier_dropout=0.1,
        norm_scheme="pre",
        dense_bias=False,
        position_embedding="scaled-sinusoidal",
        type_vocab_size=0,
        ffn_activation="gelu-glu",
        final_norm=True,
        head_transform=False,
        decoder_bias=False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermed_size = intermed_size
        self.max_seq_length = max_seq_length
        self.norm_eps = norm_eps
        self.hidden_dropout = hidden_dropout
        self.attn_dropout = attn_dropout
        self.embedding_dropout = embedding_dropout
        self.init_std = init_std
        self.sparse_prediction = sparse_prediction
        self.head_dim = head_dim
        self.classifier_dropout = classifier_dropout
        self.norm_scheme = norm_scheme
        self.dense_bias = dense_bias
        self.position_embedding = position_embedding
        self.type_vocab_size = type_vocab_size
        self.ffn_activation = ffn_activation
        self.final_norm = final_norm
        self.head_transform = head_transform
        self.decoder_bias = decoder_bias
        # The MLM decoder reads the word embedding itself: there is no second
        # weight to tie.
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self._check()

    def _check(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.norm_scheme not in ("pre", "post"):
            raise ValueError(f"norm_scheme must be 'pre' or 'post', not {self.norm_scheme!r}")
        if self.position_embedding not in ("scaled-sinusoidal", "learned"):
            raise ValueError(
                "position_embedding must be 'scaled-sinusoidal' or 'learned', "
                f"not {self.position_embedding!r}"
            )
        if self.ffn_activation not in ("gelu-glu", "gelu"):
            raise ValueError(
                f"ffn_activation must be 'gelu-glu' or 'gelu', not {self.ffn_activation!r}"
            )
