"""HMERConfig: one configuration for the whole HMER model family (CoMER, BTTR, HMER-MTL, ABM, SAN-DA)."""

from __future__ import annotations

import copy

from transformers import PretrainedConfig

# Special-token ids shared by the tokenizer and the model (the tokenizer puts these four first in its vocabulary).
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

# HMER-MTL's structure skeleton: these symbols are kept, every other symbol becomes the auxiliary head's <space> class.
SKELETON_SYMBOLS = ["{", "}", "^", "_", "\\frac", "\\sqrt", "[", "]", "+", "=", "-", "\\times", "\\cdot", "\\div", "\\geq", ">", "<"]
# Their ids in the default CROHME vocabulary (tokenization_hmer.CROHME_SYMBOLS, id = 4 + index), in id order:
# \geq \sqrt \cdot < + [ _ { \times ^ > \frac \div - = ] }. A model trained with another vocabulary must pass its own
# `skeleton_token_ids` (see `HMERConfig.skeleton_ids_from_vocab`).
DEFAULT_SKELETON_TOKEN_IDS = [4, 5, 12, 15, 37, 49, 50, 60, 65, 78, 85, 86, 88, 92, 96, 103, 113]

# The structure tokens that syntax-constrained decoding reads (see `modeling_hmer.LatexSyntaxLogitsProcessor`), and
# their ids in the default CROHME vocabulary. A model trained with another vocabulary must pass its own
# `syntax_token_ids` (see `HMERConfig.syntax_ids_from_vocab`; the training script does).
CROHME_VOCAB_SIZE = 114  # 4 special tokens + the 110 CROHME symbols (tokenization_hmer.CROHME_SYMBOLS)
SYNTAX_SYMBOLS = ["{", "}", "^", "_", "\\frac", "\\sqrt", "[", "]"]
DEFAULT_SYNTAX_TOKEN_IDS = {"{": 60, "}": 113, "^": 78, "_": 50, "\\frac": 86, "\\sqrt": 5, "[": 49, "]": 103}

# Presets: each family member is a set of overrides on the CoMER defaults below.
PRESETS: dict[str, dict] = {
    # CoMER (Zhao & Gao, ECCV 2022): DenseNet-B + Transformer decoder with ARM in self- and cross-coverage.
    "comer": {},
    # BTTR (Zhao et al., ICDAR 2021): the same without coverage.
    "bttr": {"cross_coverage": False, "self_coverage": False},
    # HMER-MTL: CoMER + CBAM inside ARM + structure-skeleton auxiliary head.
    "hmer-mtl": {"arm_cbam": True, "skeleton_head": True, "skeleton_loss_weight": 1.0},
    # ABM (Bian et al., AAAI 2022): DenseNet + twin two-stage GRU decoders (L2R, R2L; separate weights) with the
    # attention aggregation module (11x11 and 5x5 coverage convs) and mutual distillation; inference: L2R only.
    # Output dropout 0.2 as in the authors' code (github.com/XH-B/ABM); the paper trains with Adadelta (lr 1.0).
    "abm": {
        "decoder_type": "gru",
        "twin_decoders": True,
        "hidden_size": 256,
        "attention_dim": 512,
        "coverage_kernel_sizes": [11, 5],
        "coverage_channels": 512,
        "dropout": 0.2,
        "mutual_learning": True,
        "mutual_kl_weight": 0.5,
        "mutual_kl_temperature": 4.0,
        "direction_loss_reduction": "sum",
        "bidirectional_rescoring": False,
    },
    # SAN-DA (Li et al., 2020): ResNet-18 (stride-1 convs, max-pool downsampling) + LSTM coverage decoder with 2-D
    # position embedding and drop attention; L2R only.
    "san-da": {
        "encoder_type": "resnet18",
        "decoder_type": "lstm",
        "bidirectional": False,
        "bidirectional_rescoring": False,
        "hidden_size": 256,
        "attention_dim": 512,
        "coverage_kernel_sizes": [1],
        "coverage_channels": 0,
        "dropout": 0.5,
        "drop_attention_prob": 0.5,
        "drop_attention_threshold": 0.5,
    },
}


class HMERConfig(PretrainedConfig):
    r"""Configuration of [`HMERForConditionalGeneration`].

    The defaults reproduce CoMER: a DenseNet-B encoder (3 blocks x 16 bottleneck layers, growth 24, output 684 channels
    at stride 16) projected to `d_model`, and a 3-layer post-LN Transformer decoder whose cross-attention is refined by
    the Attention Refinement Module (coverage). Other family members are presets: see [`HMERConfig.from_preset`].

    Args:
        vocab_size: size of the LaTeX token vocabulary (4 special tokens + symbols).
        encoder_type: `"densenet"` (CoMER/BTTR/ABM) or `"resnet18"` (SAN-DA).
        growth_rate, num_dense_layers, num_dense_blocks, stem_channels, reduction, encoder_dropout: DenseNet-B shape.
        transition_pooling: one flag per DenseNet transition: whether it halves the resolution (`None`: all do, the
            CoMER stride of 16). `[True, False]` gives stride 8, for inputs downscaled by 2 (image processor `scale`).
        d_model: width of the projected features and of the Transformer decoder.
        decoder_type: `"transformer"` (CoMER family), `"gru"` (ABM) or `"lstm"` (SAN-DA).
        num_decoder_layers, num_attention_heads, dim_feedforward, dropout: Transformer decoder shape.
        cross_coverage: refine layer i's cross-attention with the *previous layer's* attention (i >= 2).
        self_coverage: refine it with the *same layer's* attention (both off = BTTR).
        arm_channels, arm_kernel_size: the ARM's hidden conv width and kernel.
        arm_cbam: add CBAM (channel + spatial attention) inside the ARM (HMER-MTL).
        skeleton_head, skeleton_loss_weight: auxiliary structure-skeleton head and its loss weight (HMER-MTL).
        skeleton_token_ids: token ids kept in the skeleton targets (default: [`DEFAULT_SKELETON_TOKEN_IDS`], the
            structure symbols of the CROHME vocabulary); every other non-special token becomes the extra class
            `vocab_size` of the auxiliary head.
        resnet_channels, resnet_blocks: ResNet-18 stage widths and basic blocks per stage (SAN-DA encoder).
        resnet_pooling: one flag per ResNet stage: whether its 2x2 max-pool runs (`None`: all do, stride 16).
            `[True, True, True, False]` gives stride 8, for inputs downscaled by 2.
        hidden_size: RNN hidden size and token embedding size (ABM, SAN-DA).
        attention_dim: width of the additive (coverage) attention of the RNN decoders.
        coverage_kernel_sizes, coverage_channels: the coverage convolutions of the RNN attention (ABM's attention
            aggregation: 11x11 and 5x5 convs to 512 channels, each followed by a linear map to `attention_dim`;
            `coverage_channels=0`: each conv maps the coverage straight to `attention_dim`).
        drop_attention_prob, drop_attention_threshold: drop attention (SAN-DA, training only): with this probability
            per sample and step, the attention weights >= threshold x the step's largest weight are zeroed and the
            rest renormalised.
        twin_decoders: separate L2R and R2L decoders (ABM) instead of one shared decoder (CoMER/BTTR).
        mutual_learning, mutual_kl_weight, mutual_kl_temperature: add weight x T^2 x KL(p_L2R || p_R2L) over aligned
            positions (ABM's mutual distillation; needs `bidirectional`).
        direction_loss_reduction: `"mean"`: cross-entropy averaged over the tokens of both directions (CoMER);
            `"sum"`: CE_L2R + CE_R2L, each averaged over its tokens (ABM).
        bidirectional: train L2R and R2L at once (one shared decoder, or two with `twin_decoders`).
        bidirectional_rescoring: default for `generate(num_beams>1)`: rescore finished beams with the opposite
            direction and keep the best sum.
        max_position_embeddings: longest token sequence the 1-D position encoding is built for.
        syntax_constrained_decoding: default for `generate()`: keep every decoded sequence within the grammar of
            normalised CROHME LaTeX (balanced braces; `^`, `_`, `\frac`, `\sqrt` followed by their groups), in both
            directions; see `modeling_hmer.LatexSyntaxLogitsProcessor`.
        syntax_token_ids: the ids of [`SYNTAX_SYMBOLS`] in the vocabulary (default: [`DEFAULT_SYNTAX_TOKEN_IDS`] for
            the CROHME vocabulary's size, none otherwise). Constraints need at least `{` and `}`; the others are used
            when present.
    """

    model_type = "hmer"

    def __init__(
        self,
        vocab_size: int = 114,
        # encoder
        encoder_type: str = "densenet",
        stem_channels: int = 48,
        growth_rate: int = 24,
        num_dense_layers: int = 16,
        num_dense_blocks: int = 3,
        reduction: float = 0.5,
        encoder_dropout: float = 0.2,
        transition_pooling: list[bool] | None = None,
        # decoder
        decoder_type: str = "transformer",
        d_model: int = 256,
        num_decoder_layers: int = 3,
        num_attention_heads: int = 8,
        dim_feedforward: int = 1024,
        dropout: float = 0.3,
        cross_coverage: bool = True,
        self_coverage: bool = True,
        arm_channels: int = 32,
        arm_kernel_size: int = 5,
        arm_cbam: bool = False,
        skeleton_head: bool = False,
        skeleton_loss_weight: float = 1.0,
        skeleton_token_ids: list[int] | None = None,
        # ResNet-18 encoder (SAN-DA)
        resnet_channels: list[int] | tuple[int, ...] = (64, 128, 256, 512),
        resnet_blocks: list[int] | tuple[int, ...] = (2, 2, 2, 2),
        resnet_pooling: list[bool] | None = None,
        # RNN decoders (ABM, SAN-DA)
        hidden_size: int = 256,
        attention_dim: int = 512,
        coverage_kernel_sizes: list[int] | tuple[int, ...] = (11, 5),
        coverage_channels: int = 512,
        drop_attention_prob: float = 0.0,
        drop_attention_threshold: float = 0.5,
        # bidirectional training
        twin_decoders: bool = False,
        mutual_learning: bool = False,
        mutual_kl_weight: float = 0.5,
        mutual_kl_temperature: float = 4.0,
        direction_loss_reduction: str = "mean",
        # training / decoding
        bidirectional: bool = True,
        bidirectional_rescoring: bool = True,
        max_position_embeddings: int = 512,
        syntax_constrained_decoding: bool = True,
        syntax_token_ids: dict[str, int] | None = None,
        initializer_range: float = 0.02,
        pad_token_id: int = PAD_ID,
        bos_token_id: int = BOS_ID,
        eos_token_id: int = EOS_ID,
        decoder_start_token_id: int = BOS_ID,
        is_encoder_decoder: bool = True,
        **kwargs,
    ):
        if encoder_type not in ("densenet", "resnet18"):
            raise ValueError(f"encoder_type must be 'densenet' or 'resnet18', got {encoder_type!r}")
        if decoder_type not in ("transformer", "gru", "lstm"):
            raise ValueError(f"decoder_type must be 'transformer', 'gru' or 'lstm', got {decoder_type!r}")
        if direction_loss_reduction not in ("mean", "sum"):
            raise ValueError(f"direction_loss_reduction must be 'mean' or 'sum', got {direction_loss_reduction!r}")
        if (twin_decoders or mutual_learning) and not bidirectional:
            raise ValueError("twin_decoders and mutual_learning need bidirectional=True")
        if any(k % 2 == 0 for k in coverage_kernel_sizes):
            raise ValueError(f"coverage_kernel_sizes must be odd, got {list(coverage_kernel_sizes)}")
        if len(resnet_channels) != len(resnet_blocks):
            raise ValueError("resnet_channels and resnet_blocks must have the same length (one entry per stage)")
        if d_model % num_attention_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_attention_heads ({num_attention_heads})")
        self.vocab_size = vocab_size
        self.encoder_type = encoder_type
        self.stem_channels = stem_channels
        self.growth_rate = growth_rate
        self.num_dense_layers = num_dense_layers
        self.num_dense_blocks = num_dense_blocks
        self.reduction = reduction
        self.encoder_dropout = encoder_dropout
        self.transition_pooling = None if transition_pooling is None else [bool(p) for p in transition_pooling]
        if self.transition_pooling is not None and len(self.transition_pooling) != num_dense_blocks - 1:
            raise ValueError(
                f"transition_pooling needs one flag per transition ({num_dense_blocks - 1}), got {transition_pooling}"
            )
        self.decoder_type = decoder_type
        self.d_model = d_model
        self.num_decoder_layers = num_decoder_layers
        self.num_attention_heads = num_attention_heads
        self.dim_feedforward = dim_feedforward
        self.dropout = dropout
        self.cross_coverage = cross_coverage
        self.self_coverage = self_coverage
        self.arm_channels = arm_channels
        self.arm_kernel_size = arm_kernel_size
        self.arm_cbam = arm_cbam
        self.skeleton_head = skeleton_head
        self.skeleton_loss_weight = skeleton_loss_weight
        if skeleton_token_ids is None and skeleton_head:
            skeleton_token_ids = DEFAULT_SKELETON_TOKEN_IDS
        self.skeleton_token_ids = list(skeleton_token_ids) if skeleton_token_ids is not None else None
        self.resnet_channels = list(resnet_channels)
        self.resnet_blocks = list(resnet_blocks)
        self.resnet_pooling = None if resnet_pooling is None else [bool(p) for p in resnet_pooling]
        if self.resnet_pooling is not None and len(self.resnet_pooling) != len(self.resnet_blocks):
            raise ValueError(
                f"resnet_pooling needs one flag per ResNet stage ({len(self.resnet_blocks)}), got {resnet_pooling}"
            )
        self.hidden_size = hidden_size
        self.attention_dim = attention_dim
        self.coverage_kernel_sizes = list(coverage_kernel_sizes)
        self.coverage_channels = coverage_channels
        self.drop_attention_prob = drop_attention_prob
        self.drop_attention_threshold = drop_attention_threshold
        self.twin_decoders = twin_decoders
        self.mutual_learning = mutual_learning
        self.mutual_kl_weight = mutual_kl_weight
        self.mutual_kl_temperature = mutual_kl_temperature
        self.direction_loss_reduction = direction_loss_reduction
        self.bidirectional = bidirectional
        self.bidirectional_rescoring = bidirectional_rescoring
        self.max_position_embeddings = max_position_embeddings
        self.syntax_constrained_decoding = syntax_constrained_decoding
        if syntax_token_ids is None:  # the CROHME ids only fit the CROHME vocabulary; another one must pass its own
            syntax_token_ids = DEFAULT_SYNTAX_TOKEN_IDS if vocab_size == CROHME_VOCAB_SIZE else {}
        self.syntax_token_ids = dict(syntax_token_ids)
        self.initializer_range = initializer_range
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            decoder_start_token_id=decoder_start_token_id,
            is_encoder_decoder=is_encoder_decoder,
            **kwargs,
        )

    @property
    def use_coverage(self) -> bool:
        """Whether the ARM is active at all."""
        return self.cross_coverage or self.self_coverage

    @property
    def is_recurrent(self) -> bool:
        """Whether the decoder is an attention RNN (ABM's GRU, SAN-DA's LSTM) rather than the Transformer."""
        return self.decoder_type in ("gru", "lstm")

    @staticmethod
    def skeleton_ids_from_vocab(vocab: dict[str, int]) -> list[int]:
        """The ids of [`SKELETON_SYMBOLS`] in a tokenizer vocabulary (`tokenizer.get_vocab()`), for `skeleton_token_ids`."""
        return sorted(vocab[s] for s in SKELETON_SYMBOLS if s in vocab)

    @staticmethod
    def syntax_ids_from_vocab(vocab: dict[str, int]) -> dict[str, int]:
        """The ids of [`SYNTAX_SYMBOLS`] in a tokenizer vocabulary (`tokenizer.get_vocab()`), for `syntax_token_ids`."""
        return {s: vocab[s] for s in SYNTAX_SYMBOLS if s in vocab}

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "HMERConfig":
        """Build the configuration of a named family member (`comer`, `bttr`, `hmer-mtl`, `abm`, `san-da`)."""
        key = name.lower().replace("_", "-")
        if key not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        kwargs = copy.deepcopy(PRESETS[key])
        kwargs.update(overrides)
        return cls(preset=key, **kwargs)
