/**
 * The importers of checkpoints that are not packages yet, as one table: each says whether a path is its
 * kind (`sniff`, cheap: a folder's files, a file's magic) and imports it, loading its code only then.
 * `openModel` (run a checkpoint in place) and `splitllm import` (write it as a package) both ask the table,
 * so a format is detected in one place. A new format: one file plus one entry here. (Packages and ONNX
 * exports are not imported this way: they are opened as they are.)
 */
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { ImportedModel } from '../package.js';

export interface Importer {
  /** what the user calls it, in messages */
  name: string;
  sniff(path: string): boolean;
  import(path: string, opts: { tokenizer?: string }): Promise<ImportedModel>;
}

/** Whether a file starts with GGUF's magic (llama.cpp's format). */
export function isGguf(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(4);
    return readSync(fd, b, 0, 4, 0) === 4 && b.toString('latin1') === 'GGUF';
  } finally {
    closeSync(fd);
  }
}

const isDir = (p: string): boolean => statSync(p).isDirectory();

/** In order: the first whose sniff holds imports the path (llama2.c, which has no magic, is the last resort for a file). */
export const IMPORTERS: readonly Importer[] = [
  { name: 'Hugging Face directory', sniff: (p) => isDir(p) && existsSync(join(p, 'config.json')), import: async (p) => (await import('./hf.js')).importHuggingFace(p) },
  { name: 'GGUF file', sniff: (p) => !isDir(p) && isGguf(p), import: async (p) => (await import('./gguf.js')).importGguf(p) },
  {
    name: 'llama2.c checkpoint',
    sniff: (p) => !isDir(p),
    import: async (p, o) => {
      const m = await import('./llama2c.js');
      return m.importLlama2c(p, o.tokenizer ?? m.findLlama2cTokenizer(p));
    },
  },
];

/** The importer of `path`, or undefined (a folder that is neither a package nor a Hugging Face model). */
export function importerFor(path: string): Importer | undefined {
  return IMPORTERS.find((i) => i.sniff(path));
}
