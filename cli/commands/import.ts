import { existsSync, statSync } from 'node:fs';
import { SplitLLMError } from '../../shared/errors.js';
import { parameterCount } from '../../models/manifest.js';
import { writePackage, type ImportedModel } from '../../models/package.js';
import { SYNTHETIC_PRESETS, syntheticModel } from '../../models/importers/synthetic.js';
import { intOption, requireString, type Command } from '../common.js';

export const importCommand: Command = {
  name: 'import',
  summary:
    'Writes a model package. The package is a folder with manifest.json, model.safetensors and tokenizer.json, made from a llama2.c checkpoint, ' +
    `a Hugging Face Llama/Mistral/Qwen2 directory, or a synthetic preset (${Object.keys(SYNTHETIC_PRESETS).join(', ')}).`,
  usage: 'splitllm import <checkpoint.bin | hf-dir> --out DIR [--tokenizer tok.bin] | splitllm import --synthetic PRESET --out DIR [--seed N]',
  positionals: true,
  options: {
    out: { type: 'string', short: 'o', description: 'package directory to write', valueName: 'DIR' },
    tokenizer: { type: 'string', description: 'llama2.c tok*.bin (default: tok<vocab>.bin next to the checkpoint)', valueName: 'PATH' },
    synthetic: { type: 'string', description: 'write seeded random weights in a real model shape instead', valueName: 'PRESET' },
    seed: { type: 'string', description: 'seed for --synthetic', default: '1234' },
    layers: { type: 'string', description: 'override the layer count of a --synthetic preset' },
    dtype: { type: 'string', description: 'weight storage: f32 or f16', default: 'f32' },
    json: { type: 'boolean', description: 'print the manifest as JSON' },
  },
  async run(values, positionals) {
    const out = requireString(values, 'out', 'import');
    const dtype = String(values['dtype']).toUpperCase();
    if (dtype !== 'F32' && dtype !== 'F16') throw new SplitLLMError('E_USAGE', `--dtype must be f32 or f16, got "${String(values['dtype'])}"`);
    let model: ImportedModel;
    if (values['synthetic']) {
      const layers = intOption(values, 'layers', undefined, 1);
      model = syntheticModel(String(values['synthetic']), intOption(values, 'seed', 1234)!, layers ? { nLayers: layers } : {});
    } else {
      const src = positionals[0];
      if (!src) throw new SplitLLMError('E_USAGE', "name a checkpoint or Hugging Face directory to import, or --synthetic PRESET (see 'splitllm import --help')");
      if (!existsSync(src)) throw new SplitLLMError('E_FILE_NOT_FOUND', `${src} does not exist: check the path`);
      if (statSync(src).isDirectory()) {
        const { importHuggingFace } = await import('../../models/importers/hf.js');
        model = await importHuggingFace(src);
      } else {
        const { importLlama2c, findLlama2cTokenizer } = await import('../../models/importers/llama2c.js');
        model = await importLlama2c(src, (values['tokenizer'] as string | undefined) ?? findLlama2cTokenizer(src));
      }
    }
    process.stderr.write(`writing ${model.name} (${(parameterCount(model.config) / 1e6).toFixed(2)}M parameters) to ${out}\n`);
    const manifest = await writePackage(out, model, dtype);
    // load it back: the package must open as written
    const { ModelPackage } = await import('../../models/package.js');
    ModelPackage.load(out);
    if (values['json']) process.stdout.write(JSON.stringify(manifest) + '\n');
    else process.stdout.write(`wrote ${out}: ${manifest.config.nLayers} layers, dim ${manifest.config.dim}, vocab ${manifest.config.vocabSize}, sha256 ${manifest.weightsSha256.slice(0, 16)}…\n`);
  },
};
