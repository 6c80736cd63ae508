"""The BERT network, bottom-up in reading order.

embeddings -> self-attention -> feed-forward -> layer -> BertModel -> MLM head -> task models.

Shapes: B batch, T sequence length, C hidden size, nh heads, hs head size (C = nh * hs),
V vocabulary size, N number of positions the MLM head is asked about.

Linear, Dropout and SelfAttention go through kernels.py, CPU fast paths that stand in for the plain
torch ops where those are slow (oneDNN fp32 matmuls, a cheaper dropout mask, attention written out).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint, kernels
from .config import BertConfig


def activation(name: str):
    # "gelu" in BERT checkpoints is the exact erf form; the tanh form is a different function.
    if name == "gelu":
        return nn.GELU()
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return nn.GELU(approximate="tanh")
    return nn.ReLU()


@dataclass
class Output:
    """What every model returns. `loss` is set when labels are given.

    For masked LM, `logits` are (B, T, V) for the whole sequence, or (N, V) when the head ran only
    at N selected positions; `n_targets` is the number of tokens the loss averages over, which the
    trainer needs to average correctly over micro-batches and ranks.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    n_targets: torch.Tensor | None = None
    # a tagger with a CRF layer: its learned (transitions (L, L), start (L,), end (L,)) scores, detached,
    # which decoding adds to the tokens' tag scores
    crf: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


class Linear(nn.Linear):
    """nn.Linear through kernels.linear (fp32 CPU matmuls on oneDNN): the same parameters and
    state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.linear(x, self.weight, self.bias)


class Dropout(nn.Dropout):
    """nn.Dropout through kernels.dropout (a cheaper mask on CPUs, the same distribution)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.dropout(x, self.p, self.training)


class Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:
            position_ids = torch.arange(input_ids.size(1), device=input_ids.device)  # (T,), same for every row
        x = self.word(input_ids) + self.position(position_ids)  # (B, T, C)
        if token_type_ids is None:
            x = x + self.token_type.weight[0]  # every token in segment 0
        else:
            x = x + self.token_type(token_type_ids)
        return self.drop(self.norm(x))



class SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.nh, self.hs = cfg.num_attention_heads, cfg.head_size
        # Q, K and V in one matmul: one kernel launch and one read of x instead of three.
        self.qkv = Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.proj = Linear(cfg.hidden_size, cfg.hidden_size)
        # Holds the attention dropout p; the written-out attention draws its mask itself, SDPA takes p.
        self.attn_drop = Dropout(cfg.attention_probs_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C), or (N, C) at `positions` (see select): every token is still a key
        and a value, but queries, attention weights and the output projection are computed for the
        selected tokens only."""
        if positions is not None:
            return self.forward_at(x, mask, positions)
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        y = self.attend(q, k, v, mask)  # (B, T, C)
        return self.proj(y)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """(B, Tq, C) queries, (B, T, C) keys and values -> (B, Tq, C)."""
        p = self.attn_drop.p if self.training else 0.0
        if kernels.write_out_attention(q, p):
            return kernels.attention(q, k, v, mask, self.nh, p)
        B, Tq, C = q.shape
        T = k.size(1)
        q = q.view(B, Tq, self.nh, self.hs).transpose(1, 2)  # (B, nh, Tq, hs)
        k = k.view(B, T, self.nh, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.nh, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, Tq, hs)
        return y.transpose(1, 2).reshape(B, Tq, C)  # (B, Tq, C)

    def forward_at(self, x: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (N, C) at `positions`. Each row's selected queries are gathered into a
        (B, Tq, C) block, Tq the most any row has (the rest of the block repeats the row's first
        token and is dropped afterwards), so attention stays one batched call of Tq query rows."""
        B, T, C = x.shape
        if positions.dtype == torch.bool:
            positions = positions.nonzero()  # (N, 2), row-major, as select gives them
        rows, cols = positions[:, 0], positions[:, 1]  # (N,), (N,)
        counts = torch.bincount(rows, minlength=B)  # (B,) selected tokens per row
        # Each selected token's slot in its row's block: its rank among the row's selections.
        order = torch.argsort(rows, stable=True)
        first = counts.cumsum(0) - counts  # (B,) where each row's selections start in `order`
        slot = torch.empty_like(rows)
        slot[order] = torch.arange(len(rows), device=x.device) - first[rows[order]]
        Tq = int(counts.max()) if len(rows) else 0
        query_cols = torch.zeros(B, Tq, dtype=cols.dtype, device=x.device)  # (B, Tq)
        query_cols[rows, slot] = cols
        row_of = torch.arange(B, device=x.device)[:, None]  # (B, 1), with query_cols: (B, Tq) gathers
        w, b = self.qkv.weight, self.qkv.bias  # (3C, C), (3C,): Q's rows first
        q = kernels.linear(x[row_of, query_cols], w[:C], b[:C])  # (B, Tq, C)
        k, v = kernels.linear(x, w[C:], b[C:]).split(C, dim=2)  # 2 x (B, T, C)
        if mask is not None and mask.size(2) > 1:  # a packed mask, (B, 1, T, T): each query's row of it
            mask = mask[row_of, 0, query_cols][:, None]  # (B, 1, Tq, T)
        y = self.attend(q, k, v, mask)  # (B, Tq, C)
        return self.proj(y[rows, slot])  # (N, C)


class FeedForward(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.up = Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = activation(cfg.hidden_act)
        self.down = Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class Layer(nn.Module):
    """One post-LN transformer layer, as in the original BERT: x = LN(x + sublayer(x))."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C), or (N, C) at `positions`: the residual, both LayerNorms and the
        feed-forward then run for those N tokens only."""
        a = self.attn(x, mask, positions)
        if positions is not None:
            x = select(x, positions)
        x = self.attn_norm(x + self.drop(a))
        x = self.ffn_norm(x + self.drop(self.ffn(x)))
        return x


def select(h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) -> (N, ...) in row-major order. positions: a (B, T) boolean mask, or a (N, 2)
    tensor of (row, column) indices."""
    if positions.dtype == torch.bool:
        return h[positions]
    return h[positions[:, 0], positions[:, 1]]


def attention_mask_for_sdpa(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) with 1 = token, 0 = padding  ->  (B, 1, 1, T) boolean, True = may attend.

    Returns None when nothing is padded, which lets SDPA pick its fastest (maskless) kernel.
    Only keys are masked: a padded query row still sees the real tokens, so no row is fully
    masked and no softmax turns into NaN, in any precision. Padded rows' outputs are ignored.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask[:, None, None, :].bool()


def packed_mask_for_sdpa(sequence_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) sequence ids (0 = padding, k >= 1 = the k-th sequence of the row) -> (B, 1, T, T)
    boolean, True = may attend: block-diagonal, a token sees only the tokens of its own sequence.

    Padding is a block of its own, so no row is fully masked: a fully masked row's softmax is NaN,
    and in the next layer a real token's zero attention weight times that NaN value is NaN again.
    """
    return sequence_ids[:, None, :, None] == sequence_ids[:, None, None, :]  # (B, 1, T, T)


def packed_position_ids(sequence_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) sequence ids -> (B, T) positions that restart at 0 where each sequence starts, so a
    packed sequence gets the position embeddings it would get alone."""
    B, T = sequence_ids.shape
    idx = torch.arange(T, device=sequence_ids.device).expand(B, T)  # (B, T)
    starts = torch.ones_like(sequence_ids, dtype=torch.bool)
    starts[:, 1:] = sequence_ids[:, 1:] != sequence_ids[:, :-1]
    # The latest sequence start at or before each token: a running max over the start indices.
    first = torch.where(starts, idx, 0).cummax(dim=1).values  # (B, T)
    return idx - first


def init_weights(module: nn.Module, std: float) -> None:
    """The BERT initialisation: normal(0, std) weights, zero biases, LayerNorm at identity."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Pretrained:
    """from_pretrained / save_pretrained for Hugging Face checkpoint folders (see checkpoint.py).

    key_prefix: what our parameter names lack against checkpoint.KEY_TABLE's, which is written for
    the task models (`bert.layers.0...`); a bare BertModel's names start at `layers.0...`.
    """

    key_prefix = ""

    @classmethod
    def from_pretrained(cls, folder, **config_overrides):
        return checkpoint.from_pretrained(cls, folder, **config_overrides)

    def save_pretrained(self, folder, tokenizer=None, dtype: torch.dtype | None = None) -> None:
        checkpoint.save_pretrained(self, folder, tokenizer=tokenizer, dtype=dtype)


class BertModel(Pretrained, nn.Module):
    key_prefix = "bert."

    def __init__(self, cfg: BertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))
        # The pooler ([CLS] -> dense -> tanh) feeds the classifier; masked LM does not use it.
        self.pooler = Linear(cfg.hidden_size, cfg.hidden_size) if add_pooler else None
        init_weights(self, cfg.initializer_range)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        sequence_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) ids -> (B, T, C) last hidden state, or (N, C) at `positions` only.

        positions: a (B, T) boolean mask or (N, 2) (row, column) indices of the tokens whose last
        hidden state is wanted (the masked tokens for a masked-LM loss, [CLS] for a classifier). The
        last layer then computes queries, attention weights, output projection, residual,
        LayerNorms and feed-forward for those N tokens only, while every token stays a key and a
        value of its attention: the same values as selecting from the full output, for a fraction
        of the last layer's work.

        sequence_ids: (B, T) for rows that pack several sequences (0 = padding, k >= 1 = the k-th
        sequence of the row, each contiguous). Attention then stays within each sequence and
        positions restart at 0 per sequence, so every sequence gets the hidden states it would get
        alone; attention_mask is not needed (sequence 0 is the padding).
        """
        if sequence_ids is None:
            mask, position_ids = attention_mask_for_sdpa(attention_mask), None
        else:
            mask, position_ids = packed_mask_for_sdpa(sequence_ids), packed_position_ids(sequence_ids)
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, positions if i == last else None)
        if positions is not None and last < 0:
            x = select(x, positions)
        return x

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, C) last hidden state, or (B, C) [CLS] vectors -> (B, C): [CLS] through dense + tanh."""
        return torch.tanh(self.pooler(hidden[:, 0] if hidden.dim() == 3 else hidden))


class MLMHead(nn.Module):
    """Transform (dense + activation + LayerNorm), then a projection onto the vocabulary whose
    weight is the word-embedding table itself (tied) and whose bias is the head's own."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """(..., C), (V, C) -> (..., V). The embedding table is passed in, not stored, so the tied
        weight has one name in the state dict."""
        h = self.norm(self.act(self.dense(h)))
        return kernels.linear(h, word_embeddings, self.bias)


class BertForMaskedLM(Pretrained, nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.bert = BertModel(cfg, add_pooler=False)
        self.head = MLMHead(cfg)
        # With labels, run the head, and the last layer apart from its keys and values, only where
        # labels != -100 (about 15% of tokens). The loss is the same as the dense head's; the
        # vocabulary projection, the costliest matmul of a small model, and most of the last layer's
        # matmuls shrink by ~85%. Off only to compare against the dense path.
        self.sparse_head = True
        init_weights(self.head, cfg.initializer_range)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        *,
        sequence_ids: torch.Tensor | None = None,
    ) -> Output:
        """input_ids, attention_mask, token_type_ids, labels: (B, T). sequence_ids: (B, T) for
        packed rows, see BertModel.forward.

        positions: a (B, T) boolean mask, or a (N, 2) tensor of (row, column) indices, of the
        tokens to predict; the logits are then (N, V) in row-major order. Without positions the
        logits are (B, T, V), unless labels are given and `sparse_head` is on, in which case the
        positions are those with a label.
        """
        if positions is None and labels is not None and self.sparse_head:
            positions = labels != -100
        h = self.bert(input_ids, attention_mask, token_type_ids, sequence_ids=sequence_ids,
                      positions=positions)  # (B, T, C), or (N, C) at the positions
        if positions is not None and labels is not None:
            labels = select(labels, positions)  # (N,)
        logits = self.head(h, self.bert.embeddings.word.weight)
        if labels is None:
            return Output(logits)
        return Output(logits, *masked_lm_loss(logits, labels))


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits to fp32 for the softmax: a bf16 log-sum-exp over a large vocabulary
    loses most of its digits. Wider types stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the tokens with a label, and their count.

    A batch with no label at all gives loss 0 (still attached to the graph) instead of the NaN
    that 0/0 would give.
    """
    logits = upcast(logits.reshape(-1, logits.size(-1)))
    labels = labels.reshape(-1)
    total = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    n = (labels != -100).sum()
    return total / n.clamp(min=1), n


class Classifier(Pretrained, nn.Module):
    """The encoder, dropout and a linear layer to num_labels outputs: what the sequence and token
    classifiers share. The dropout is config.classifier_dropout, else hidden_dropout_prob, as in
    transformers."""

    def __init__(self, cfg: BertConfig, add_pooler: bool):
        super().__init__()
        self.config = cfg
        self.bert = BertModel(cfg, add_pooler=add_pooler)
        p = cfg.classifier_dropout if cfg.classifier_dropout is not None else cfg.hidden_dropout_prob
        self.drop = Dropout(p)
        self.classifier = Linear(cfg.hidden_size, cfg.num_labels)
        init_weights(self.classifier, cfg.initializer_range)


class BertForSequenceClassification(Classifier):
    """[CLS] pooled -> classifier. The loss follows config.problem_type, as transformers' does:
    regression MSE, single-label cross-entropy, multi-label BCE with logits.

    `class_weights` (num_labels,), set with set_class_weights for training, weights the single-label
    cross-entropy, or each label's positive term of the multi-label binary cross-entropy (pos_weight);
    it is a non-persistent buffer, so no saved file carries it."""

    class_weights: torch.Tensor | None

    def __init__(self, cfg: BertConfig):
        super().__init__(cfg, add_pooler=True)
        self.register_buffer("class_weights", None, persistent=False)

    def set_class_weights(self, weights: torch.Tensor | None) -> None:
        if weights is not None:
            assert weights.shape == (self.config.num_labels,), (weights.shape, self.config.num_labels)
            weights = weights.to(self.classifier.weight.device, torch.float32)
        self.class_weights = weights

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Output:
        """-> logits (B, num_labels); with labels (B,) classes or values, or (B, num_labels) multi-hot, the
        loss and n_targets, what it averages over (the sum of the class weights, when weighted)."""
        cls = torch.zeros_like(input_ids, dtype=torch.bool)
        cls[:, 0] = True
        h = self.bert(input_ids, attention_mask, token_type_ids, positions=cls)  # (B, C): [CLS] only
        logits = self.classifier(self.drop(self.bert.pool(h)))  # (B, num_labels)
        if labels is None:
            return Output(logits)
        problem = self.config.problem_type
        if problem is None:  # transformers' rule: by num_labels, then by the labels' dtype
            problem = ("regression" if self.config.num_labels == 1 else "multi_label_classification"
                       if labels.is_floating_point() else "single_label_classification")
        n = torch.tensor(labels.shape[0], device=labels.device)
        if problem == "regression":
            pred = upcast(logits.squeeze(-1))  # (B,)
            loss = F.mse_loss(pred, labels.to(pred.dtype).reshape(pred.shape))
        elif problem == "multi_label_classification":
            # the mean over every (example, label): each micro-batch weighs B, as it holds B * num_labels
            loss = F.binary_cross_entropy_with_logits(upcast(logits), labels.to(torch.float32),
                                                      pos_weight=self.class_weights)
        elif self.class_weights is not None:
            # sum(w_y * ce) / sum(w_y), CrossEntropyLoss(weight=w)'s mean; n = sum(w_y) keeps it exact
            # across micro-batches and ranks
            loss = F.cross_entropy(upcast(logits), labels, weight=self.class_weights)
            n = self.class_weights[labels].sum()
        else:
            loss = F.cross_entropy(upcast(logits), labels)
        return Output(logits, loss, n)


CRF_KEY = "crf"  # config.json: the tagger has a linear-chain CRF layer over its tag scores


class CRF(nn.Module):
    """A linear-chain conditional random field over a sentence's tags (Lafferty et al. 2001).

    A tag sequence y_1..y_n scores start[y_1] + sum_t e_t[y_t] + sum_t transitions[y_t-1, y_t] + end[y_n],
    e_t being the classifier's logits at the t-th labelled token. Training minimises the negative
    log-likelihood of the gold sequence, log Z - score(gold), log Z summed over every sequence by the
    forward algorithm. Only tokens with a label (not -100) are in the chain: [CLS], [SEP], padding and a
    word's later pieces are stepped over, so the chain runs word to word; a sentence read in overlapping
    windows trains as one chain per window (each over the words that window owns), start and end scores
    included, while decoding reads the sentence whole. Decoding (data.tagging.viterbi)
    adds these scores to the tokens' log-softmax, which shifts every path by the same amount per token:
    the best path is the CRF's. The scores are left out of weight decay (optim.param_groups)."""

    no_weight_decay = True

    def __init__(self, num_labels: int):
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(num_labels, num_labels))  # [from, to]
        self.start_transitions = nn.Parameter(torch.zeros(num_labels))
        self.end_transitions = nn.Parameter(torch.zeros(num_labels))

    def scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.transitions.detach(), self.start_transitions.detach(), self.end_transitions.detach()

    def nll(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (the summed negative log-likelihood of every row's labelled tokens' gold tags, their count).
        logits (B, T, L), labels (B, T) with -100 where a token is not in the chain."""
        keep = labels != -100
        counts = keep.sum(1)
        rows = counts > 0
        if not bool(rows.any()):  # zero, still attached to every parameter (DDP expects each one's gradient)
            return (logits.sum() + sum(p.sum() for p in self.parameters())) * 0.0, counts.sum()
        logits, labels, keep, counts = logits[rows], labels[rows], keep[rows], counts[rows]
        n = int(counts.max())
        # the labelled positions of each row moved to its front, in order: (N, n)
        at = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)[:, :n]
        em = upcast(logits).gather(1, at[..., None].expand(-1, -1, logits.size(-1)))  # (N, n, L)
        mask = torch.arange(n, device=labels.device)[None] < counts[:, None]  # (N, n)
        tags = labels.gather(1, at).masked_fill(~mask, 0)
        # the gold sequence's score
        gold = self.start_transitions[tags[:, 0]] + em[:, 0].gather(1, tags[:, :1]).squeeze(1)
        steps = em[:, 1:].gather(2, tags[:, 1:, None]).squeeze(2) + self.transitions[tags[:, :-1], tags[:, 1:]]
        gold = gold + (steps * mask[:, 1:]).sum(1)
        gold = gold + self.end_transitions[tags.gather(1, (counts - 1)[:, None]).squeeze(1)]
        # log Z: alpha[b, j] = log of the summed scores of every prefix ending in tag j
        alpha = self.start_transitions + em[:, 0]
        for t in range(1, n):
            nxt = torch.logsumexp(alpha[:, :, None] + self.transitions, dim=1) + em[:, t]
            alpha = torch.where(mask[:, t, None], nxt, alpha)
        log_z = torch.logsumexp(alpha + self.end_transitions, dim=1)
        return (log_z - gold).sum(), counts.sum()


class BertForTokenClassification(Classifier):
    """Every token's last hidden state -> classifier: one tag per token (entities, word boundaries).
    No pooler, as in transformers, so the two load each other's folders key for key. With "crf": true in
    the config, a CRF layer over the tags (CRF above) gives the loss and the decoding; transformers reads
    such a folder as a plain tagger with the same logits (it leaves the crf.* weights unused)."""

    def __init__(self, cfg: BertConfig):
        super().__init__(cfg, add_pooler=False)
        self.crf = CRF(cfg.num_labels) if cfg.extra.get(CRF_KEY) else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Output:
        """-> logits (B, T, num_labels); with labels (B, T), -100 where no tag counts ([CLS], [SEP],
        padding, a word's later pieces, the other window's copy of an overlap), the mean cross-entropy
        over the tagged tokens (with a CRF: the sentences' negative log-likelihood per tagged token) and
        n_targets, their count."""
        h = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        logits = self.classifier(self.drop(h))  # (B, T, num_labels)
        crf = self.crf.scores() if self.crf is not None else None
        if labels is None:
            return Output(logits, crf=crf)
        if self.crf is None:
            return Output(logits, *masked_lm_loss(logits, labels))
        total, n = self.crf.nll(logits, labels)
        return Output(logits, total / n.clamp(min=1), n, crf=crf)


def set_dropout(model: nn.Module, p: float) -> None:
    """Use dropout probability p everywhere (embeddings, attention, residuals, classifier) for the
    rest of this model's life, leaving `model.config` as it was: a pre-training run without dropout
    still saves a config that fine-tunes with the usual value."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p


def num_parameters(model: nn.Module) -> int:
    """Parameters counted once, however many modules share them (the tied decoder)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


__all__ = [
    "Output",
    "BertModel",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "init_weights",
    "num_parameters",
    "set_dropout",
]
