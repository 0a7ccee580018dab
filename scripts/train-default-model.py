#!/usr/bin/env python3
"""Trains splitllm's default model: a small Llama-architecture model (GQA, RoPE, SwiGLU) on
tinyshakespeare, with a byte-level BPE tokenizer trained here, and writes it as a splitllm model
package (manifest.json + model.safetensors + tokenizer.json + tokenizer_config.json with its chat template).

Dev-only tool: the runtime never needs Python. Needs PyTorch (Debian: python3-torch, with
libopenblas0-pthread for speed). Deterministic for a given seed, thread count and PyTorch build.

    python3 scripts/train-default-model.py \
        --corpus ../shared/fixtures/corpus/tinyshakespeare.txt --out models/default

The draft model of speculative decoding (models/draft: the same corpus, so the same tokenizer):

    python3 scripts/train-default-model.py --out models/draft --name splitllm-shakespeare-draft \
        --dim 128 --layers 2 --heads 4 --kv-heads 2 --ffn 384 --eval-every 0

The last --holdout fraction of the text (cut at a blank line) is never trained on; the held-out
perplexity printed at the end follows the fixtures' protocol (paragraphs, BOS, windows of 256+1).
"""
import argparse
import collections
import hashlib
import json
import math
import os
import re
import struct
import sys
import time

BOS, EOS = 0, 1
SPECIALS = ['<s>', '</s>']

# GPT-2's pre-tokenizer pattern, as @huggingface/transformers' ByteLevel pre-tokenizer runs it.
# Python's `re` has no \p{L}/\p{N}: [^\W\d_] is "a letter" and \d "a digit" (the same on this corpus).
PRETOKENIZE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def bytes_to_unicode():
    """GPT-2's map from bytes to printable characters (the ByteLevel alphabet)."""
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHARS = bytes_to_unicode()


def words_of(text):
    """Pre-tokenized words, each as a tuple of ByteLevel characters."""
    for w in PRETOKENIZE.findall(text):
        yield tuple(BYTE_CHARS[b] for b in w.encode('utf-8'))


def train_bpe(text, vocab_size):
    """Byte-level BPE: merges the most frequent adjacent pair (ties: the smaller pair) until the
    vocabulary (specials + 256 bytes + merges) has vocab_size entries."""
    counts = collections.Counter(words_of(text))
    words = [list(w) for w in counts]
    freqs = [counts[w] for w in counts]
    merges = []
    n_merges = vocab_size - len(SPECIALS) - 256
    pair_counts = collections.Counter()
    where = collections.defaultdict(set)
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pair_counts[(a, b)] += freqs[i]
            where[(a, b)].add(i)
    for _ in range(n_merges):
        if not pair_counts:
            break
        best = max(pair_counts.items(), key=lambda kv: (kv[1], tuple(-ord(c) for c in kv[0][0] + '\0' + kv[0][1])))[0]
        merges.append(best)
        merged = best[0] + best[1]
        for i in list(where[best]):
            w = words[i]
            f = freqs[i]
            for a, b in zip(w, w[1:]):
                pair_counts[(a, b)] -= f
                if pair_counts[(a, b)] <= 0:
                    del pair_counts[(a, b)]
            out = []
            j = 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == best[0] and w[j + 1] == best[1]:
                    out.append(merged)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for a, b in zip(out, out[1:]):
                pair_counts[(a, b)] += f
                where[(a, b)].add(i)
        where.pop(best, None)
    return merges


class Tokenizer:
    def __init__(self, merges):
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.vocab = {s: i for i, s in enumerate(SPECIALS)}
        for b in range(256):
            self.vocab[BYTE_CHARS[b]] = len(self.vocab)
        for a, b in merges:
            self.vocab[a + b] = len(self.vocab)
        self.merges = merges
        self.cache = {}

    def word_ids(self, w):
        ids = self.cache.get(w)
        if ids is not None:
            return ids
        parts = list(w)
        while len(parts) > 1:
            best, rank = None, None
            for k in range(len(parts) - 1):
                r = self.ranks.get((parts[k], parts[k + 1]))
                if r is not None and (rank is None or r < rank):
                    best, rank = k, r
            if best is None:
                break
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        ids = [self.vocab[p] for p in parts]
        self.cache[w] = ids
        return ids

    def encode(self, text):
        out = []
        for w in words_of(text):
            out.extend(self.word_ids(w))
        return out

    def json(self):
        def special(i, s):
            return {'id': i, 'content': s, 'single_word': False, 'lstrip': False, 'rstrip': False,
                    'normalized': False, 'special': True}
        byte_level = {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': True}
        return {
            'version': '1.0',
            'truncation': None,
            'padding': None,
            'added_tokens': [special(i, s) for i, s in enumerate(SPECIALS)],
            'normalizer': None,
            'pre_tokenizer': byte_level,
            'post_processor': None,
            'decoder': byte_level,
            'model': {
                'type': 'BPE', 'dropout': None, 'unk_token': None, 'continuing_subword_prefix': None,
                'end_of_word_suffix': None, 'fuse_unk': False, 'byte_fallback': False, 'ignore_merges': False,
                'vocab': self.vocab, 'merges': [f'{a} {b}' for a, b in self.merges],
            },
        }


def paragraphs(text):
    """The protocol's paragraphs: split on blank lines, stripped, empty ones dropped."""
    return [p.strip() for p in re.split(r'\n\s*\n', text) if p.strip()]


def split_holdout(text, fraction):
    """Cuts the text at the first blank line after (1 - fraction) of its length."""
    cut = text.find('\n\n', int(len(text) * (1 - fraction)))
    return text[:cut], text[cut:]


def build_model(torch, cfg):
    nn = torch.nn
    F = torch.nn.functional

    class RMSNorm(nn.Module):
        def __init__(self, dim, eps):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))
            self.eps = eps

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    def rotate_half(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            hd = cfg['headDim']
            self.q_proj = nn.Linear(cfg['dim'], cfg['nHeads'] * hd, bias=False)
            self.k_proj = nn.Linear(cfg['dim'], cfg['nKvHeads'] * hd, bias=False)
            self.v_proj = nn.Linear(cfg['dim'], cfg['nKvHeads'] * hd, bias=False)
            self.o_proj = nn.Linear(cfg['nHeads'] * hd, cfg['dim'], bias=False)

        def forward(self, x, cos, sin, mask):
            B, T, _ = x.shape
            hd, H, KV = cfg['headDim'], cfg['nHeads'], cfg['nKvHeads']
            q = self.q_proj(x).view(B, T, H, hd).transpose(1, 2)
            k = self.k_proj(x).view(B, T, KV, hd).transpose(1, 2)
            v = self.v_proj(x).view(B, T, KV, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = k.repeat_interleave(H // KV, dim=1)
            v = v.repeat_interleave(H // KV, dim=1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask
            y = F.softmax(att, dim=-1) @ v
            return self.o_proj(y.transpose(1, 2).reshape(B, T, H * hd))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj = nn.Linear(cfg['dim'], cfg['ffnDim'], bias=False)
            self.up_proj = nn.Linear(cfg['dim'], cfg['ffnDim'], bias=False)
            self.down_proj = nn.Linear(cfg['ffnDim'], cfg['dim'], bias=False)

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_layernorm = RMSNorm(cfg['dim'], cfg['normEps'])
            self.self_attn = Attention()
            self.post_attention_layernorm = RMSNorm(cfg['dim'], cfg['normEps'])
            self.mlp = MLP()

        def forward(self, x, cos, sin, mask):
            x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
            return x + self.mlp(self.post_attention_layernorm(x))

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(cfg['vocabSize'], cfg['dim'])
            self.layers = nn.ModuleList([Layer() for _ in range(cfg['nLayers'])])
            self.norm = RMSNorm(cfg['dim'], cfg['normEps'])

    class Llama(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Inner()
            hd = cfg['headDim']
            inv = 1.0 / (cfg['ropeTheta'] ** (torch.arange(0, hd, 2).float() / hd))
            ang = torch.outer(torch.arange(cfg['maxSeq']).float(), inv)
            ang = torch.cat((ang, ang), dim=-1)
            self.register_buffer('cos', ang.cos(), persistent=False)
            self.register_buffer('sin', ang.sin(), persistent=False)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02
                    if name.endswith('o_proj.weight') or name.endswith('down_proj.weight'):
                        std = 0.02 / math.sqrt(2 * cfg['nLayers'])
                    nn.init.normal_(p, mean=0.0, std=std)

        def forward(self, ids):
            T = ids.shape[1]
            x = self.model.embed_tokens(ids)
            cos, sin = self.cos[:T], self.sin[:T]
            mask = torch.full((T, T), float('-inf')).triu(1)
            for layer in self.model.layers:
                x = layer(x, cos, sin, mask)
            return self.model.norm(x) @ self.model.embed_tokens.weight.t()  # tied head

    return Llama()


def heldout_ppl(torch, model, tok, text, window=256):
    """The fixtures' protocol: paragraphs, BOS first, windows of window+1 ids."""
    F = torch.nn.functional
    nll, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for p in paragraphs(text):
            ids = [BOS] + tok.encode(p)
            for s in range(0, len(ids), window):
                w = ids[s:s + window + 1]
                if len(w) < 2:
                    continue
                x = torch.tensor([w])
                logits = model(x[:, :-1])
                nll += F.cross_entropy(logits[0], x[0, 1:], reduction='sum').item()
                n += len(w) - 1
    model.train()
    return math.exp(nll / n), n


def write_safetensors(path, tensors):
    header = {'__metadata__': {'format': 'pt'}}
    offset = 0
    blobs = []
    for name, t in tensors:
        data = t.detach().contiguous().float().numpy().astype('<f4').tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(t.shape), 'data_offsets': [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(',', ':')).encode('utf-8')
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(torch, path):
    """The float32 tensors of a safetensors file (what write_safetensors writes)."""
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, m in header.items():
        if name == '__metadata__':
            continue
        if m['dtype'] != 'F32':
            raise SystemExit(f'{path}: tensor {name} is {m["dtype"]}, only F32 packages can be loaded')
        a, b = m['data_offsets']
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(m['shape'])
    return out


def load_package(torch, pkg_dir):
    """A splitllm package this script wrote, as a PyTorch model, and its config."""
    manifest = json.load(open(os.path.join(pkg_dir, 'manifest.json')))
    cfg = manifest['config']
    model = build_model(torch, cfg)
    model.load_state_dict(read_safetensors(torch, os.path.join(pkg_dir, manifest['weights'])), strict=True)
    return model, cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--corpus', default='../shared/fixtures/corpus/tinyshakespeare.txt')
    ap.add_argument('--out', default='models/default')
    ap.add_argument('--name', default='splitllm-shakespeare', help="the package's name (manifest.json)")
    ap.add_argument('--holdout', type=float, default=0.1, help='fraction of the text (its tail) never trained on')
    ap.add_argument('--vocab', type=int, default=512)
    ap.add_argument('--dim', type=int, default=192)
    ap.add_argument('--layers', type=int, default=6)
    ap.add_argument('--heads', type=int, default=6)
    ap.add_argument('--kv-heads', type=int, default=2)
    ap.add_argument('--ffn', type=int, default=512)
    ap.add_argument('--seq', type=int, default=256, help='training context = maxSeq of the package')
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--steps', type=int, default=1100)
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--warmup', type=int, default=100)
    ap.add_argument('--weight-decay', type=float, default=0.1)
    ap.add_argument('--seed', type=int, default=1337)
    ap.add_argument('--threads', type=int, default=os.cpu_count() or 1)
    ap.add_argument('--eval-every', type=int, default=500)
    ap.add_argument('--teacher', help='distill from this package (same corpus, so the same tokenizer): the loss is KL(teacher || model) at temperature 1, so a draft model learns the teacher\'s distribution')
    ap.add_argument('--init', help='start from this package\'s weights (same shape) instead of random ones')
    args = ap.parse_args()

    import torch
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.time()

    raw = open(args.corpus, 'rb').read()
    corpus_sha = hashlib.sha256(raw).hexdigest()
    text = raw.decode('utf-8')
    train_text, held_text = split_holdout(text, args.holdout)
    log(f'corpus {len(text)} chars: training on the first {len(train_text)}, holding out the last {len(held_text)}')

    merges = train_bpe(train_text, args.vocab)
    tok = Tokenizer(merges)
    log(f'tokenizer: {len(tok.vocab)} tokens ({len(merges)} merges) in {time.time() - t0:.1f} s')

    stream = []
    for p in paragraphs(train_text):
        stream += [BOS] + tok.encode(p) + [EOS]
    data = torch.tensor(stream, dtype=torch.long)
    log(f'training stream: {len(stream)} tokens ({len(train_text) / len(stream):.2f} chars/token)')

    cfg = {
        'architecture': 'llama', 'dim': args.dim, 'nLayers': args.layers, 'nHeads': args.heads,
        'nKvHeads': args.kv_heads, 'headDim': args.dim // args.heads, 'ffnDim': args.ffn,
        'vocabSize': args.vocab, 'maxSeq': args.seq, 'ropeTheta': 10000.0, 'ropeStyle': 'half',
        'normEps': 1e-5, 'tiedEmbeddings': True, 'qkvBias': False, 'bosId': BOS, 'eosId': EOS,
    }
    model = build_model(torch, cfg)
    if args.init:
        init, init_cfg = load_package(torch, args.init)
        if any(init_cfg[k] != cfg[k] for k in ('dim', 'nLayers', 'nHeads', 'nKvHeads', 'ffnDim', 'vocabSize')):
            raise SystemExit(f'--init {args.init}: its shape differs from the one asked for')
        model.load_state_dict(init.state_dict())
        log(f'starting from the weights of {args.init}')
    teacher = None
    if args.teacher:
        teacher, teacher_cfg = load_package(torch, args.teacher)
        teacher.eval()
        if json.load(open(os.path.join(args.teacher, 'tokenizer.json'), encoding='utf-8'))['model']['vocab'] != tok.json()['model']['vocab']:
            raise SystemExit(f'--teacher {args.teacher}: its tokenizer is not the one this corpus gives')
        log(f'distilling from {args.teacher} ({teacher_cfg["nLayers"]} layers, dim {teacher_cfg["dim"]})')
    n_params = sum(p.numel() for p in model.parameters())
    log(f'model: {n_params} parameters, {json.dumps({k: cfg[k] for k in ("dim", "nLayers", "nHeads", "nKvHeads", "ffnDim", "vocabSize", "maxSeq")})}')

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': args.weight_decay},
                             {'params': no_decay, 'weight_decay': 0.0}], lr=args.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)
    F = torch.nn.functional
    t_train = time.time()
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g['lr'] = lr
        starts = torch.randint(0, len(data) - args.seq - 1, (args.batch,), generator=gen)
        x = torch.stack([data[s:s + args.seq] for s in starts])
        y = torch.stack([data[s + 1:s + args.seq + 1] for s in starts])
        if teacher is None:
            loss = F.cross_entropy(model(x).view(-1, args.vocab), y.view(-1))
        else:
            with torch.no_grad():
                target = F.log_softmax(teacher(x).view(-1, args.vocab), dim=-1)
            loss = F.kl_div(F.log_softmax(model(x).view(-1, args.vocab), dim=-1), target, log_target=True, reduction='batchmean')
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == 1:
            el = time.time() - t_train
            log(f'step {step}/{args.steps} loss {loss.item():.4f} lr {lr:.2e} '
                f'{step * args.batch * args.seq / el:.0f} tokens/s, {el / step * (args.steps - step) / 60:.1f} min left')
        if args.eval_every and step % args.eval_every == 0 and step < args.steps:
            ppl, n = heldout_ppl(torch, model, tok, held_text)
            log(f'step {step}: held-out ppl {ppl:.4f} over {n} ids')
    train_s = time.time() - t_train

    ppl, n = heldout_ppl(torch, model, tok, held_text)
    log(f'held-out ppl {ppl:.4f} over {n} predicted ids (training took {train_s / 60:.1f} min)')

    os.makedirs(args.out, exist_ok=True)
    names = []
    inner = model.model
    names.append(('model.embed_tokens.weight', inner.embed_tokens.weight))
    for i, layer in enumerate(inner.layers):
        pre = f'model.layers.{i}.'
        names += [
            (pre + 'input_layernorm.weight', layer.input_layernorm.weight),
            (pre + 'self_attn.q_proj.weight', layer.self_attn.q_proj.weight),
            (pre + 'self_attn.k_proj.weight', layer.self_attn.k_proj.weight),
            (pre + 'self_attn.v_proj.weight', layer.self_attn.v_proj.weight),
            (pre + 'self_attn.o_proj.weight', layer.self_attn.o_proj.weight),
            (pre + 'post_attention_layernorm.weight', layer.post_attention_layernorm.weight),
            (pre + 'mlp.gate_proj.weight', layer.mlp.gate_proj.weight),
            (pre + 'mlp.up_proj.weight', layer.mlp.up_proj.weight),
            (pre + 'mlp.down_proj.weight', layer.mlp.down_proj.weight),
        ]
    names.append(('model.norm.weight', inner.norm.weight))
    wpath = os.path.join(args.out, 'model.safetensors')
    write_safetensors(wpath, names)
    with open(os.path.join(args.out, 'tokenizer.json'), 'w', encoding='utf-8') as f:
        json.dump(tok.json(), f, ensure_ascii=False)
    # the chat template of the default model: speakers as the corpus writes them ("Name:\n" then a blank line)
    chat_template = (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
        "{{ message['content'] | trim }}{{ '\\n\\n' }}{% else %}{{ message['role'] | capitalize }}{{ ':\\n' }}"
        "{{ message['content'] | trim }}{{ '\\n\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:\\n' }}{% endif %}"
    )
    with open(os.path.join(args.out, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
        json.dump({'chat_template': chat_template, 'bos_token': '<s>', 'eos_token': '</s>'}, f, indent=2)
        f.write('\n')
    sha = hashlib.sha256(open(wpath, 'rb').read()).hexdigest()
    manifest = {
        'format': 'splitllm-model', 'version': 1, 'name': args.name, 'config': cfg,
        'weights': 'model.safetensors', 'tokenizer': 'tokenizer.json', 'weightsSha256': sha,
        'source': {
            'trainer': 'scripts/train-default-model.py', 'corpus': os.path.basename(args.corpus),
            'corpusSha256': corpus_sha, 'trainChars': len(train_text), 'heldOutChars': len(held_text),
            'seed': args.seed, 'steps': args.steps, 'batch': args.batch, 'seq': args.seq, 'lr': args.lr,
            'torch': torch.__version__, 'threads': args.threads, 'trainSeconds': round(train_s, 1),
            'heldOutPpl': round(ppl, 4), 'heldOutTokens': n,
            **({'teacher': os.path.basename(os.path.normpath(args.teacher))} if args.teacher else {}),
            **({'init': os.path.basename(os.path.normpath(args.init))} if args.init else {}),
        },
    }
    with open(os.path.join(args.out, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=2)
        f.write('\n')
    log(f'wrote {args.out} ({os.path.getsize(wpath) / 1e6:.1f} MB weights) in {(time.time() - t0) / 60:.1f} min total')


if __name__ == '__main__':
    main()
