import { describe, expect, it } from 'vitest';
import { FAMILIES, familyForHfType } from '../models/families/registry.js';
import { hfToConfig } from '../models/importers/hf.js';
import { SYNTHETIC_PRESETS, syntheticModel } from '../models/importers/synthetic.js';
import { expectedTensors, parameterCount } from '../models/manifest.js';
import { buildSegment } from '../models/onnx/segment.js';
import { ModelPackage } from '../models/package.js';
import { decoderTensors, layerLinears, normGroups } from '../shared/decoder.js';
import { userErrorOf } from './helpers/errors.js';
import { segmentBytes } from '../quantization/weights/memory.js';

/** A Hugging Face config.json of a 4-layer model, with overrides. */
function hf(overrides: Record<string, unknown>): Record<string, unknown> {
  return {
    model_type: 'llama',
    hidden_size: 64,
    intermediate_size: 160,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 320,
    max_position_embeddings: 8192,
    rms_norm_eps: 1e-5,
    hidden_act: 'silu',
    ...overrides,
  };
}


describe('model families from config.json', () => {
  it('every family is reachable from its model_type and the ids are unique', () => {
    expect(FAMILIES.map((f) => f.id)).toEqual(['llama', 'mistral', 'qwen2']);
    for (const f of FAMILIES) for (const t of f.hfModelTypes) expect(familyForHfType(t, 'x').id).toBe(f.id);
  });

  it('llama: attention_bias turns on q/k/v biases, tie_word_embeddings is read, the context is max_position_embeddings', () => {
    const plain = hfToConfig(hf({}), 'config.json');
    expect([plain.architecture, plain.qkvBias, plain.tiedEmbeddings, plain.maxSeq, plain.headDim, plain.ropeStyle]).toEqual(['llama', false, false, 8192, 16, 'half']);
    const biased = hfToConfig(hf({ attention_bias: true, tie_word_embeddings: true }), 'config.json');
    expect([biased.qkvBias, biased.tiedEmbeddings]).toEqual([true, true]);
    expect(decoderTensors(biased).has('model.layers.3.self_attn.v_proj.bias')).toBe(true);
    expect(decoderTensors(biased).has('lm_head.weight')).toBe(false);
  });

  it('mistral: the sliding window caps the context, no biases', () => {
    const c = hfToConfig(hf({ model_type: 'mistral', sliding_window: 4096, max_position_embeddings: 32768 }), 'config.json');
    expect([c.architecture, c.maxSeq, c.qkvBias]).toEqual(['mistral', 4096, false]);
    expect(hfToConfig(hf({ model_type: 'mistral', sliding_window: null }), 'c').maxSeq).toBe(8192);
    expect(hfToConfig(hf({ model_type: 'mistral', sliding_window: 16384 }), 'c').maxSeq).toBe(8192);
  });

  it('qwen2: q/k/v biases always; the window applies only with use_sliding_window', () => {
    const off = hfToConfig(hf({ model_type: 'qwen2', sliding_window: 4096, use_sliding_window: false, tie_word_embeddings: true }), 'c');
    expect([off.architecture, off.qkvBias, off.tiedEmbeddings, off.maxSeq]).toEqual(['qwen2', true, true, 8192]);
    expect(hfToConfig(hf({ model_type: 'qwen2', sliding_window: 4096, use_sliding_window: true }), 'c').maxSeq).toBe(4096);
  });

  it.each([
    [{ model_type: 'gpt2' }, 'E_UNKNOWN_ARCHITECTURE', /"gpt2" is not supported: splitllm imports llama, mistral, qwen2/],
    [{ model_type: undefined }, 'E_UNKNOWN_ARCHITECTURE', /model_type null/],
    [{ num_attention_heads: '4' }, 'E_BAD_CONFIG', /: num_attention_heads must be a finite number, got "4"/],
    [{ hidden_size: undefined }, 'E_BAD_CONFIG', /lacks hidden_size/],
    [{ attention_bias: 'yes' }, 'E_BAD_CONFIG', /attention_bias must be true or false/],
    [{ mlp_bias: true }, 'E_BAD_CONFIG', /mlp_bias = true, which splitllm does not run yet/],
    [{ hidden_act: 'gelu' }, 'E_BAD_CONFIG', /hidden_act = "gelu".*SwiGLU/],
    [{ eos_token_id: ['2'] }, 'E_BAD_CONFIG', /eos_token_id must be an integer, got "2"/],
    [{ model_type: 'mistral', sliding_window: 'wide' }, 'E_BAD_CONFIG', /sliding_window must be an integer/],
  ])('refuses %j with %s', (over, code, message) => {
    const e = userErrorOf(() => hfToConfig(hf(over), 'dir/config.json'));
    expect(e.code).toBe(code);
    expect(e.message).toMatch(/^dir\/config\.json: /);
    expect(e.message).toMatch(message);
  });

  it('a JSON array or string as config.json is E_BAD_CONFIG', () => {
    expect(userErrorOf(() => hfToConfig([], 'c.json')).code).toBe('E_BAD_CONFIG');
    expect(userErrorOf(() => hfToConfig('llama', 'c.json')).code).toBe('E_BAD_CONFIG');
  });
});

describe('the shared decoder layout', () => {
  it('normGroups fold q/k/v into the attention norm and gate/up into the FFN norm; o and down read no norm', () => {
    const c = SYNTHETIC_PRESETS['tiny']!.config;
    const groups = normGroups(c, 2).map((g) => [g.norm, g.linears.map((l) => l.role)]);
    expect(groups).toEqual([
      ['model.layers.2.input_layernorm.weight', ['q', 'k', 'v']],
      ['model.layers.2.post_attention_layernorm.weight', ['gate', 'up']],
    ]);
    expect(layerLinears(c, 2).filter((l) => !l.norm).map((l) => l.role)).toEqual(['o', 'down']);
  });

  it('the layout, the accounting and the built graph count the same bytes for every preset family', () => {
    const extras: number[] = [];
    for (const [arch, qkvBias, tiedEmbeddings] of [
      ['llama', false, false],
      ['qwen2', true, true],
      ['mistral', false, true],
    ] as const) {
      const pkg = ModelPackage.fromImported(syntheticModel('tiny', 5, { architecture: arch, qkvBias, tiedEmbeddings }));
      const c = pkg.config;
      const floats = [...expectedTensors(c).values()].reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0);
      expect(floats).toBe(parameterCount(c));
      const built = buildSegment(c, pkg.weights, 0, c.nLayers);
      const predicted = segmentBytes(c, 0, c.nLayers, { bitsOf: () => 32 });
      // the builder adds a few shape constants (int64 vectors, float scalars); a tied head a few more
      extras.push(built.weightBytes - predicted.total);
      // per layer: 7 linears + 2 norms, + 3 biases when the family has them
      expect(predicted.other).toBe(qkvBias ? c.nLayers * (c.nHeads + 2 * c.nKvHeads) * c.headDim * 4 : 0);
    }
    for (const e of extras) expect(e).toBeGreaterThan(0);
    for (const e of extras) expect(e).toBeLessThan(1024);
    // qwen2 and mistral are both tied: the q/k/v biases are accounted to the byte
    expect(extras[1]).toBe(extras[2]);
  });
});
