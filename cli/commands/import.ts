import { existsSync, readdirSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { SplitLLMError } from '../../shared/errors.js';
import { DEFAULT_MODEL_DIR } from '../../models/default-model.js';
import { parameterCount } from '../../models/manifest.js';
import { isOnnxExport, SafetensorsWeights, writeOnnxPackage, writePackage, type ImportedModel } from '../../models/package.js';
import { importerFor } from '../../models/importers/registry.js';
import { progress } from '../common.js';
import { SYNTHETIC_PRESETS, syntheticModel, syntheticPreset } from '../../models/importers/synthetic.js';
import { defineCommand, opt } from '../options.js';

export const importCommand = defineCommand({
  name: 'import',
  summary:
    'Writes a model package. The package is a folder with manifest.json, model.safetensors and tokenizer.json, made from a llama2.c checkpoint, a llama-architecture GGUF file (dequantized to float), ' +
    'a decoder-only ONNX export (an .onnx file or its folder: onnxruntime-genai, optimum/transformers.js layouts; cut at any layer at run time), ' +
    `a Hugging Face Llama/Mistral/Qwen2 directory, or a synthetic preset (${Object.keys(SYNTHETIC_PRESETS).join(', ')}). An existing folder is not overwritten unless --force.`,
  usage: 'splitllm import <checkpoint.bin | model.gguf | model.onnx | onnx-dir | hf-dir> --out DIR [--tokenizer tok.bin] [--force] | splitllm import --synthetic PRESET --out DIR [--seed N]',
  examples: [
    'splitllm import ../shared/fixtures/stories260K/stories260K.bin --out models/stories260K',
    'splitllm import ./Llama-3.2-1B --out models/llama-3.2-1b            # bf16 stays bf16',
    'splitllm import ./TinyLlama-1.1B --out models/tinyllama --dtype f16',
    'splitllm import ../shared/fixtures/gguf/stories260K.gguf --out models/stories260K-gguf',
    'splitllm import ../shared/fixtures/onnx/ortgenai-tiny-random-llama-fp16 --out models/tiny-genai',
    'splitllm import --synthetic llama-100m --out /tmp/llama-100m --layers 4',
  ],
  positionals: 'checkpoint, GGUF file or Hugging Face directory',
  options: {
    out: opt.string({ short: 'o', required: true, description: 'package directory to write', valueName: 'DIR' }),
    force: opt.flag({ description: 'write into a folder that already holds files (replacing a package there)' }),
    tokenizer: opt.file({ description: 'llama2.c tok*.bin', defaultText: 'tok<vocab>.bin next to the checkpoint' }),
    synthetic: opt.string({ description: `write seeded random weights in a real model shape instead: ${Object.keys(SYNTHETIC_PRESETS).join(', ')}`, valueName: 'PRESET' }),
    seed: opt.int({ default: 1234, description: 'seed for --synthetic' }),
    layers: opt.int({ min: 1, description: 'override the layer count of a --synthetic preset' }),
    dtype: opt.choice({ choices: ['auto', 'f32', 'f16', 'bf16'] as const, default: 'auto', description: 'weight storage: auto keeps what the source stores (a bf16 checkpoint stays bf16, streamed tensor by tensor); f32/f16/bf16 convert' }),
    json: opt.flag({ description: 'print the manifest as JSON' }),
  },
  async run(v, positionals) {
    const out = v.out;
    // what to import is checked first, then where it goes, then the (possibly long) import runs
    const src = positionals[0];
    if (v.synthetic) syntheticPreset(v.synthetic);
    else if (!src) throw new SplitLLMError('E_USAGE', "name a checkpoint or Hugging Face directory to import, or --synthetic PRESET (see 'splitllm import --help')");
    else if (!existsSync(src)) throw new SplitLLMError('E_FILE_NOT_FOUND', `${src} does not exist: check the path`);
    if (existsSync(out) && (!statSync(out).isDirectory() || readdirSync(out).length > 0) && !v.force) {
      const bundled = resolve(out) === resolve(DEFAULT_MODEL_DIR) ? ' (it is the bundled default model)' : '';
      throw new SplitLLMError('E_USAGE', `--out ${out} already exists${bundled}: choose another folder or pass --force to replace it`);
    }
    let model: ImportedModel;
    if (src && !v.synthetic && isOnnxExport(src)) {
      const { importOnnx } = await import('../../models/onnx-import/package.js');
      const m = importOnnx(src);
      for (const w of m.warnings) process.stderr.write(`warning: ${w}\n`);
      process.stderr.write(`writing ${m.name} (ONNX export, ${m.io.nLayers} layers, ${m.io.floatType}) to ${out}\n`);
      const manifest = await writeOnnxPackage(out, m);
      const { ModelPackage } = await import('../../models/package.js');
      ModelPackage.load(out);
      if (v.json) process.stdout.write(JSON.stringify(manifest) + '\n');
      else process.stdout.write(`wrote ${out}: ONNX export, ${m.io.nLayers} layers, hidden ${m.io.hiddenSize}, vocab ${m.io.vocabSize}, ${m.io.past ? 'KV inputs' : 'no KV inputs (recomputes)'}, sha256 ${manifest.weightsSha256.slice(0, 16)}…\n`);
      return;
    }
    if (v.synthetic) {
      model = syntheticModel(v.synthetic, v.seed, v.layers ? { nLayers: v.layers } : {});
    } else if (src) {
      const importer = importerFor(src);
      if (!importer) throw new SplitLLMError('E_BAD_PACKAGE', `${src} is a folder without config.json: import a Hugging Face model directory, an ONNX export, a GGUF file or a llama2.c checkpoint`);
      model = await importer.import(src, { tokenizer: v.tokenizer });
    } else throw new SplitLLMError('E_USAGE', 'nothing to import');
    if (!v.json) process.stderr.write(`writing ${model.name} (${(parameterCount(model.config) / 1e6).toFixed(2)}M parameters) to ${out}\n`);
    const dtype = v.dtype === 'auto' ? 'auto' : v.dtype === 'f32' ? 'F32' : v.dtype === 'f16' ? 'F16' : 'BF16';
    let manifest;
    try {
      manifest = await writePackage(out, model, dtype, progress(`import ${model.name}`, { bytes: true, quiet: v.json }));
    } finally {
      if (model.weights instanceof SafetensorsWeights) model.weights.close();
    }
    // load it back: the package must open as written
    const { ModelPackage } = await import('../../models/package.js');
    ModelPackage.load(out);
    if (v.json) process.stdout.write(JSON.stringify(manifest) + '\n');
    else process.stdout.write(`wrote ${out}: ${manifest.config.nLayers} layers, dim ${manifest.config.dim}, vocab ${manifest.config.vocabSize}, sha256 ${manifest.weightsSha256.slice(0, 16)}…\n`);
  },
});
