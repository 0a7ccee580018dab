/**
 * deploy/ as an operator would apply it: the Kubernetes manifests validate against the Kubernetes
 * schemas (kubernetes-models) and agree with each other and with the server (names, probes, ports,
 * drain timing, the HPA's metric); every SPLITLLM_* variable the Dockerfiles, compose file and manifests
 * set is an option of the command they run; the Dockerfiles copy what exists; the systemd units verify.
 * No cluster and no container engine needed.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1/Ingress';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { startCloud } from '../cloud/server.js';
import { cli } from './helpers/cli.js';
import { REPO } from './helpers/fixtures.js';
import { defaultModel } from './helpers/models.js';

const K8S = join(REPO, 'deploy', 'k8s');
const tmp = mkdtempSync(join(tmpdir(), 'splitllm-deploy-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A manifest as read from YAML: a map, checked where it is used. */
type Doc = Record<string, unknown>;
const isMap = (v: unknown): v is Doc => typeof v === 'object' && v !== null && !Array.isArray(v);
/** The value at a dotted path of a manifest (numbers index lists), then at `literal` keys (which may hold dots); throws when absent. */
function at(doc: unknown, path: string, ...literal: string[]): unknown {
  let v: unknown = doc;
  for (const k of [...path.split('.'), ...literal]) {
    if (Array.isArray(v)) v = v[Number(k)];
    else if (isMap(v)) v = v[k];
    else throw new Error(`no ${path} (stopped at ${k})`);
    if (v === undefined) throw new Error(`no ${path} (missing ${k})`);
  }
  return v;
}
const str = (doc: unknown, path: string, ...literal: string[]): string => {
  const v = at(doc, path, ...literal);
  if (typeof v !== 'string') throw new Error(`${path} is not a string: ${JSON.stringify(v)}`);
  return v;
};
const list = (doc: unknown, path: string): unknown[] => {
  const v = at(doc, path);
  if (!Array.isArray(v)) throw new Error(`${path} is not a list`);
  return v;
};

/** Validates one manifest against the schema of its apiVersion/kind (throws with the schema's message); the YAML's fields go onto an empty model, unchecked until validate(). */
const MODELS: Record<string, (d: Doc) => { validate(): void }> = {
  'v1/Namespace': (d) => Object.assign(new Namespace(), d),
  'v1/ConfigMap': (d) => Object.assign(new ConfigMap(), d),
  'v1/Secret': (d) => Object.assign(new Secret(), d),
  'v1/Service': (d) => Object.assign(new Service(), d),
  'apps/v1/Deployment': (d) => Object.assign(new Deployment(), d),
  'networking.k8s.io/v1/Ingress': (d) => Object.assign(new Ingress(), d),
  'autoscaling/v2/HorizontalPodAutoscaler': (d) => Object.assign(new HorizontalPodAutoscaler(), d),
  'policy/v1/PodDisruptionBudget': (d) => Object.assign(new PodDisruptionBudget(), d),
};

function manifests(): { file: string; doc: Doc }[] {
  const out: { file: string; doc: Doc }[] = [];
  for (const file of readdirSync(K8S).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')) {
    for (const d of parseAllDocuments(readFileSync(join(K8S, file), 'utf8'))) {
      expect(d.errors, file).toEqual([]);
      const doc: unknown = d.toJS();
      if (!isMap(doc)) throw new Error(`${file}: a document that is not a map`);
      out.push({ file, doc });
    }
  }
  return out;
}
const byKind = (docs: { doc: Doc }[], kind: string): Doc[] => docs.map((d) => d.doc).filter((d) => d.kind === kind);
const one = (docs: { doc: Doc }[], kind: string): Doc => {
  const found = byKind(docs, kind);
  expect(found, kind).toHaveLength(1);
  return found[0]!;
};

/** A bad manifest is refused by the same check (the validation is not vacuous). */
function schemaError(kind: string, d: Doc): string {
  try {
    MODELS[kind]!(d).validate();
    return '';
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/** Option names `splitllm <cmd>` knows (from --print-config). */
function optionNames(args: string[], env: Record<string, string> = {}): Set<string> {
  const r = cli([...args, '--print-config'], { env });
  expect(r.code, r.stderr).toBe(0);
  const printed: unknown = JSON.parse(r.stdout);
  return new Set(Object.keys(isMap(printed) && isMap(printed.settings) ? printed.settings : {}));
}
/** SPLITLLM_* variables read by the runtime itself rather than a command's options. */
const RUNTIME_VARS = new Set(['SPLITLLM_THREADS']);
function expectOptions(vars: string[], names: Set<string>, where: string): void {
  for (const v of vars) {
    if (RUNTIME_VARS.has(v) || !v.startsWith('SPLITLLM_')) continue;
    expect(names.has(v.replace(/^SPLITLLM_/, '').toLowerCase().replace(/_/g, '-')), `${where}: ${v} is not an option`).toBe(true);
  }
}

describe('deploy/k8s', () => {
  const docs = manifests();

  it('every manifest validates against the Kubernetes schema of its kind, and a broken one is refused', () => {
    const kinds = docs.map(({ doc }) => `${String(doc.apiVersion)}/${String(doc.kind)}`);
    expect(new Set(kinds)).toEqual(new Set(Object.keys(MODELS)));
    for (const { file, doc } of docs) {
      const kind = `${String(doc.apiVersion)}/${String(doc.kind)}`;
      expect(schemaError(kind, doc), `${file} ${kind}`).toBe('');
    }
    const dep = one(docs, 'Deployment');
    expect(schemaError('apps/v1/Deployment', { ...dep, spec: { ...(dep.spec as Doc), replicas: '3' } })).toMatch(/replicas must be integer/);
    const hpa = one(docs, 'HorizontalPodAutoscaler');
    expect(schemaError('autoscaling/v2/HorizontalPodAutoscaler', { ...hpa, spec: { ...(hpa.spec as Doc), scaleTargetRef: { name: 'x' } } })).toMatch(/kind/);
  });

  it('kustomization lists every manifest but the example Secret, and every object is in its namespace', () => {
    const k: unknown = parse(readFileSync(join(K8S, 'kustomization.yaml'), 'utf8'));
    const resources = list(k, 'resources').map(String).sort();
    const files = [...new Set(docs.map((d) => d.file))].filter((f) => f !== 'secret.example.yaml').sort();
    expect(resources).toEqual(files);
    const ns = str(k, 'namespace');
    for (const { file, doc } of docs) if (doc.kind !== 'Namespace') expect(str(doc, 'metadata.namespace'), file).toBe(ns);
    expect(str(one(docs, 'Namespace'), 'metadata.name')).toBe(ns);
  });

  it('names agree: Services and the PDB select the pods, the HPA scales the Deployment, the Ingress routes to the Service, volumes name the ConfigMap and the Secret', () => {
    const dep = one(docs, 'Deployment');
    const labels = at(dep, 'spec.template.metadata.labels');
    const selects = (sel: unknown) => {
      if (!isMap(sel) || !isMap(labels)) throw new Error('selector or labels not a map');
      for (const [k, v] of Object.entries(sel)) expect(labels[k], `label ${k}`).toBe(v);
    };
    selects(at(dep, 'spec.selector.matchLabels'));
    const services = byKind(docs, 'Service');
    expect(services.length).toBe(2);
    for (const s of services) selects(at(s, 'spec.selector'));
    selects(at(one(docs, 'PodDisruptionBudget'), 'spec.selector.matchLabels'));
    const hpa = one(docs, 'HorizontalPodAutoscaler');
    expect(at(hpa, 'spec.scaleTargetRef')).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: str(dep, 'metadata.name') });
    expect(Number(at(hpa, 'spec.minReplicas'))).toBeGreaterThanOrEqual(Number(at(dep, 'spec.replicas')));

    const container = at(dep, 'spec.template.spec.containers.0');
    const portName = str(container, 'ports.0.name');
    const containerPort = Number(at(container, 'ports.0.containerPort'));
    for (const s of services) expect(at(s, 'spec.ports.0.targetPort')).toBe(portName);
    const ingress = one(docs, 'Ingress');
    for (const p of list(ingress, 'spec.rules.0.http.paths')) {
      expect(services.map((s) => str(s, 'metadata.name'))).toContain(str(p, 'backend.service.name'));
      expect(str(p, 'backend.service.port.name')).toBe(str(services[0], 'spec.ports.0.name'));
    }
    expect(list(ingress, 'spec.rules.0.http.paths').map((p) => str(p, 'path'))).toContain('/v1/session');
    // the session's connections hash to one pod: the parameter the edge puts in the URL
    expect(str(ingress, 'metadata.annotations', 'nginx.ingress.kubernetes.io/upstream-hash-by')).toBe('$arg_session');

    const volumes = list(dep, 'spec.template.spec.volumes');
    const cm = one(docs, 'ConfigMap');
    const secret = one(docs, 'Secret');
    const vol = (name: string) => volumes.find((v) => str(v, 'name') === name);
    expect(str(vol('config'), 'configMap.name')).toBe(str(cm, 'metadata.name'));
    expect(str(vol('token'), 'secret.secretName')).toBe(str(secret, 'metadata.name'));
    // --config names the ConfigMap's key under its mount, SPLITLLM_TOKEN_FILE the Secret's key under its mount
    const mounts = list(container, 'volumeMounts');
    const mountOf = (name: string) => str(mounts.find((m) => str(m, 'name') === name), 'mountPath');
    const args = list(container, 'args').map(String);
    const configPath = args[args.indexOf('--config') + 1]!;
    expect(configPath).toBe(`${mountOf('config')}/${Object.keys(at(cm, 'data') as Doc)[0]}`);
    const env = list(container, 'env');
    const tokenFile = str(env.find((e) => str(e, 'name') === 'SPLITLLM_TOKEN_FILE'), 'value');
    expect(tokenFile).toBe(`${mountOf('token')}/${Object.keys(at(secret, 'stringData') as Doc)[0]}`);
    // Prometheus scrapes the container's port at /metrics
    expect(Number(str(dep, 'spec.template.metadata.annotations', 'prometheus.io/port'))).toBe(containerPort);
  });

  it('probes hit the endpoints the server serves, the grace period covers preStop + drain, the HPA metric exists, and the ConfigMap is a config the server accepts', async () => {
    const dep = one(docs, 'Deployment');
    const container = at(dep, 'spec.template.spec.containers.0');
    expect(str(container, 'readinessProbe.httpGet.path')).toBe('/readyz');
    expect(str(container, 'livenessProbe.httpGet.path')).toBe('/livez');
    const cloudYaml = str(one(docs, 'ConfigMap'), 'data', 'cloud.yaml');
    const settings: unknown = parse(cloudYaml);
    const drain = str(settings, 'drain-timeout');
    expect(drain).toMatch(/^\d+s$/);
    const preStop = list(container, 'lifecycle.preStop.exec.command').map(String);
    expect(preStop[0]).toBe('sleep');
    const grace = Number(at(dep, 'spec.template.spec.terminationGracePeriodSeconds'));
    expect(grace).toBeGreaterThanOrEqual(Number(preStop[1]) + parseInt(drain, 10) + 1);

    // the ConfigMap's file and the Deployment's variables, as the container would read them
    const file = join(tmp, 'cloud.yaml');
    writeFileSync(file, cloudYaml.replace('/opt/splitllm/models/default', join(REPO, 'models', 'default')));
    const token = join(tmp, 'token');
    writeFileSync(token, 'a-token\n');
    const r = cli(['cloud', '--config', file, '--print-config'], { env: { SPLITLLM_TOKEN_FILE: token } });
    expect(r.code, r.stderr).toBe(0);
    const printed = JSON.parse(r.stdout) as { settings: Record<string, { value: unknown; source: string }> };
    for (const key of Object.keys(settings as Doc)) expect(printed.settings[key]?.source, key).toBe('file');
    expect(printed.settings['token-file']).toEqual({ value: token, source: 'env' });
    // the allocator setting that lets freed KV caches go back to the OS, in every deployment (deploy/README.md, "Memory")
    expect(str(list(container, 'env').find((e) => str(e, 'name') === 'MALLOC_MMAP_THRESHOLD_'), 'value')).toBe('32768');
    const envNames = list(container, 'env').map((e) => str(e, 'name'));
    expectOptions(envNames, optionNames(['cloud']), 'deployment.yaml');

    // the HPA scales on a gauge the server exports, per pod
    const metric = str(one(docs, 'HorizontalPodAutoscaler'), 'spec.metrics.0.pods.metric.name');
    const server = await startCloud(await defaultModel());
    try {
      const text = await (await fetch(`${server.url.replace('ws', 'http')}/metrics`)).text();
      expect(text).toMatch(new RegExp(`^# TYPE ${metric} gauge$`, 'm'));
      for (const path of ['/readyz', '/livez']) expect((await fetch(`${server.url.replace('ws', 'http')}${path}`)).status, path).toBe(200);
    } finally {
      await server.close();
    }
  });
});

describe('deploy/docker and deploy/haproxy', () => {
  const dockerfiles = ['Dockerfile.cloud', 'Dockerfile.edge'].map((f) => ({ f, text: readFileSync(join(REPO, 'deploy', 'docker', f), 'utf8') }));

  it('the Dockerfiles copy what exists, run as non-root, check readiness, and set only real options', () => {
    const cloudOptions = optionNames(['cloud']);
    const edgeOptions = optionNames(['edge', 'serve', '--cloud', 'ws://127.0.0.1:1', '--split', '2']);
    for (const { f, text } of dockerfiles) {
      const lines = text.replace(/\\\n/g, ' ').split('\n');
      for (const l of lines.filter((x) => /^COPY (?!--from)/.test(x))) {
        const parts = l.split(/\s+/).slice(1, -1);
        for (const p of parts) expect(existsSync(join(REPO, p)), `${f}: COPY ${p}`).toBe(true);
      }
      expect(lines.some((l) => /^USER (?!root)\S+/.test(l)), `${f}: USER`).toBe(true);
      expect(text).toMatch(/^FROM .* AS build$/m);
      expect(text).toMatch(/^FROM .* AS runtime$/m);
      expect(text).toMatch(/npm ci --omit=dev/);
      expect(text).toMatch(/^\s+MALLOC_MMAP_THRESHOLD_=32768 \\$/m);
      const entry = /^ENTRYPOINT \[(.*)\]$/m.exec(text)?.[1];
      const script = entry && (JSON.parse(`[${entry}]`) as string[])[1];
      expect(script, f).toBe('/opt/splitllm/bin/splitllm.js');
      expect(existsSync(join(REPO, 'bin', 'splitllm.js'))).toBe(true);
      const vars = [...text.matchAll(/\b(SPLITLLM_[A-Z_]+)=/g)].map((m) => m[1]!);
      expect(vars.length).toBeGreaterThan(2);
      const isCloud = f.endsWith('.cloud');
      expectOptions(vars, isCloud ? cloudOptions : edgeOptions, f);
      expect(text).toMatch(isCloud ? /HEALTHCHECK[\s\S]*\/readyz/ : /HEALTHCHECK[\s\S]*\/ready'/);
    }
  });

  it('compose runs three replicas behind HAProxy with every variable haproxy.cfg needs, and a stop grace longer than the drain', () => {
    const compose: unknown = parse(readFileSync(join(REPO, 'deploy', 'docker', 'compose.yaml'), 'utf8'), { merge: true });
    const services = at(compose, 'services') as Doc;
    expect(Object.keys(services)).toEqual(expect.arrayContaining(['cloud1', 'cloud2', 'cloud3', 'haproxy', 'edge']));
    const cfg = readFileSync(join(REPO, 'deploy', 'haproxy', 'haproxy.cfg'), 'utf8');
    const config = cfg.split('\n').filter((l) => !/^\s*#/.test(l)).join('\n');
    const needed = [...new Set([...config.matchAll(/"\$\{([A-Z0-9_]+)\}"/g)].map((m) => m[1]!))].sort();
    expect(needed).toEqual(['SPLITLLM_CLOUD1', 'SPLITLLM_CLOUD2', 'SPLITLLM_CLOUD3', 'SPLITLLM_LB_BIND']);
    expect(Object.keys(at(services, 'haproxy.environment') as Doc).sort()).toEqual(needed);
    for (const n of ['cloud1', 'cloud2', 'cloud3']) {
      const s = at(services, n);
      expect(str(s, 'build.dockerfile')).toBe('deploy/docker/Dockerfile.cloud');
      const vars = Object.keys(at(s, 'environment') as Doc);
      expectOptions(vars, optionNames(['cloud']), `compose ${n}`);
      expect(parseInt(str(s, 'stop_grace_period'), 10)).toBeGreaterThan(parseInt(str(s, 'environment.SPLITLLM_DRAIN_TIMEOUT'), 10));
    }
    const edge = at(services, 'edge');
    expect(str(edge, 'build.dockerfile')).toBe('deploy/docker/Dockerfile.edge');
    expectOptions(Object.keys(at(edge, 'environment') as Doc), optionNames(['edge', 'serve', '--cloud', 'ws://127.0.0.1:1', '--split', '2']), 'compose edge');
    expect(str(edge, 'environment.SPLITLLM_CLOUD')).toBe(`ws://haproxy:${String(at(services, 'haproxy.environment.SPLITLLM_LB_BIND')).replace(/^.*:/, '')}`);
    expect(cfg).toMatch(/^\s*balance url_param session$/m);
    expect(cfg).toMatch(/^\s*hash-type consistent$/m);
    expect(cfg).toMatch(/uri \/readyz/);
  });
});

describe('deploy/systemd', () => {
  const analyze = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' }).stdout.trim();
  if (!analyze) process.stderr.write('[splitllm tests] SKIPPED "deploy/systemd: systemd-analyze verify": systemd-analyze not on PATH\n');
  (analyze ? it : it.skip)('both units pass systemd-analyze verify', () => {
    const dir = join(REPO, 'deploy', 'systemd');
    const r = spawnSync(analyze, ['verify', join(dir, 'splitllm-cloud.service'), join(dir, 'splitllm-edge.service')], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr.trim()).toBe('');
    for (const unit of ['splitllm-cloud.service', 'splitllm-edge.service']) expect(readFileSync(join(dir, unit), 'utf8')).toMatch(/^Environment=MALLOC_MMAP_THRESHOLD_=32768$/m);
  });
});
