/**
 * The native training engine (worker/native/src/train): a Llama-family decoder (Llama,
 * Mistral, Qwen2, SmolLM) loaded from a Hugging Face directory, LoRA or DoRA adapters on
 * any of q/k/v/o/gate/up/down, the causal-LM loss with masked (-100) labels, its gradients, and
 * AdamW steps with clipping, accumulation and warmup + cosine/linear schedules
 * (transformers/PyTorch semantics). Loading, forward and steps run off the JS thread.
 * Bad arguments throw TypeError; bad model directories reject with LowrankError
 * ('not_found' or 'invalid_file', naming the field or tensor).
 */
import { LowrankError } from '@lowrank/crds/errors';
import { patternValue } from '../peft/adapter-dir.ts';
import { type LoraModule, philox, type Seed, streamId } from './linalg.ts';
import { loadNative } from './load.ts';

export const PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type Projection = (typeof PROJECTIONS)[number];

export interface ModelConfig {
  modelType: 'llama' | 'mistral' | 'qwen2';
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  maxPositionEmbeddings: number;
  ropeTheta: number;
  ropeType: string;
  tieWordEmbeddings: boolean;
  numParams: number;
}

/**
 * rows equal-length sequences of seq tokens, row-major; labels unshifted as transformers
 * (-100 = no loss). Packing: `segments` numbers each token's document within its row
 * (non-decreasing); documents do not attend to each other, their positions restart at 0,
 * and the last token of one never predicts the first of the next.
 */
export interface TokenBatch {
  tokens: Int32Array;
  labels?: Int32Array;
  segments?: Int32Array;
  rows: number;
  seq: number;
}

export interface OptimizerOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** clip_grad_norm_ max_norm; 0 or absent: no clipping. */
  maxGradNorm?: number;
  schedule?: 'constant' | 'linear' | 'cosine';
  warmupSteps?: number;
  /** Needed by 'linear' and 'cosine'. */
  totalSteps?: number;
}

export interface StepResult {
  /** Mean loss over every labelled token of the step's micro-batches. */
  loss: number;
  tokens: number;
  /** Gradient norm before clipping. */
  gradNorm: number;
  /** The learning rate this step used. */
  lr: number;
  /** Optimizer steps taken so far. */
  step: number;
  /** Which engine ran the step: the CPU's, or the CUDA device engine (TrainModel.useDevice). */
  engine: TrainEngineKind;
}

export type TrainEngineKind = 'cpu' | 'cuda';

/** The GEMMs' compute precision: fp32 throughout, or bf16 inputs with fp32 accumulation on the bf16 frozen weights. */
export type ComputePrecision = 'f32' | 'bf16';

/**
 * useDevice()'s answer: the CUDA engine trains from now on, with the precision that will
 * run (bf16 needs cuBLAS and a bf16 checkpoint), or the CPU engine does and why.
 */
export type DeviceChoice = { engine: 'cuda'; precision: ComputePrecision } | { engine: 'cpu'; reason: string };

export interface ForwardResult {
  /** Mean causal-LM loss over labelled tokens (NaN without labels). */
  loss: number;
  count: number;
  /** [rows · seq, vocab] when asked for. */
  logits?: Float32Array;
  /** Which engine ran it: a loss-only evaluation runs on the CUDA device engine after useDevice(). */
  engine: TrainEngineKind;
}

export interface GenerateOptions {
  /** 0 (default): greedy, as transformers generate(do_sample=False). */
  temperature?: number;
  /** Nucleus sampling mass in (0, 1]; default 1. */
  topP?: number;
  /** Sampling draws Philox(seed, "sample"): the same seed gives the same tokens. */
  seed?: Seed;
  /** A row that emits this token repeats it from then on (transformers pads with it when pad_token_id is unset). */
  eos?: number;
}

interface Slot {
  r: number;
  scale: number;
  A: Float32Array;
  B: Float32Array;
  gradA: Float32Array;
  gradB: Float32Array;
  magnitude?: Float32Array;
  gradMagnitude?: Float32Array;
  R?: Float32Array;
  gradR?: Float32Array;
  moments?: Moments;
}

/**
 * AdamW first (expAvg) and second (expAvgSq) moments of one module's A, B and DoRA magnitude
 * M; a LoRA-SB module has only its core R's (A and B are frozen: empty).
 */
export interface Moments {
  expAvgA: Float32Array;
  expAvgSqA: Float32Array;
  expAvgB: Float32Array;
  expAvgSqB: Float32Array;
  expAvgM?: Float32Array;
  expAvgSqM?: Float32Array;
  expAvgR?: Float32Array;
  expAvgSqR?: Float32Array;
}

/** Everything a resumed run needs from the engine (checkpoints add data position and RNG). */
export interface TrainState {
  step: number;
  modules: Record<string, LoraModule>;
  magnitudes: Record<string, Float32Array>;
  /** LoRA-SB cores R [r, r] by module (absent: none). */
  cores?: Record<string, Float32Array>;
  moments: Record<string, Moments>;
}

interface TrainNative {
  trainLoadModel(dir: string): Promise<{ session: unknown; config: ModelConfig }>;
  trainSetLora(
    s: unknown,
    layer: number,
    proj: number,
    r: number,
    scale: number,
    A: Float32Array,
    B: Float32Array,
    magnitude?: Float32Array,
    R?: Float32Array,
  ): void;
  trainGetLora(s: unknown, layer: number, proj: number, withMoments?: boolean): Slot;
  trainSetMoments(s: unknown, layer: number, proj: number, m: Moments): void;
  trainGetStep(s: unknown): number;
  trainSetDropout(s: unknown, p: number, seed: Seed): void;
  trainSetBaseWeight(s: unknown, layer: number, proj: number, w: Float32Array | null): void;
  trainBaseWeight(s: unknown, layer: number, proj: number): Float32Array;
  trainSetRecompute(s: unknown, on: boolean): void;
  trainSetWeightGrad(s: unknown, layer: number, proj: number, on: boolean): void;
  trainWeightGrad(s: unknown, layer: number, proj: number): Float32Array | null;
  trainModuleInput(s: unknown, layer: number, proj: number): Float32Array;
  trainDropoutMask(s: unknown, layer: number, proj: number, step: number, micro: number, n: number): Float32Array;
  trainSetStep(s: unknown, step: number): void;
  trainForward(
    s: unknown,
    b: TokenBatch,
    o: { logits: boolean; backward: boolean; train?: boolean },
  ): Promise<{ lossSum: number; count: number; logits?: Float32Array; engine: TrainEngineKind }>;
  trainStep(s: unknown, micro: TokenBatch[], o: OptimizerOptions): Promise<StepResult>;
  trainUseDevice(s: unknown, precision?: ComputePrecision): Promise<DeviceChoice>;
  trainReleaseDevice(s: unknown): Promise<void>;
  trainLrLambda(o: OptimizerOptions, step: number): number;
  trainGenerate(
    s: unknown,
    prompt: Int32Array,
    rows: number,
    promptLen: number,
    maxNew: number,
    o: GenerateOptions,
    leftPad?: number[],
  ): Promise<{ tokens: Int32Array; engine: 'cpu' | 'cuda' }>;
  trainSetThreads(n: number): void;
  trainThreads(): number;
}

const native = (): TrainNative => loadNative() as unknown as TrainNative;

const CODES: Record<string, 'not_found' | 'invalid_file' | 'invalid_request'> = {
  not_found: 'not_found',
  invalid_config: 'invalid_file',
  invalid_file: 'invalid_file',
  invalid_argument: 'invalid_request',
};

function toError(err: unknown): unknown {
  if (!(err instanceof Error) || err instanceof TypeError) return err;
  const code = 'code' in err && typeof err.code === 'string' ? err.code : '';
  return new LowrankError(CODES[code] ?? 'internal', err.message, { cause: err });
}

async function call<T>(p: () => Promise<T>): Promise<T> {
  try {
    return await p();
  } catch (err) {
    throw toError(err);
  }
}

const MODULE_RE = /^model\.layers\.(\d+)\.(?:self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$/;

/** model.layers.<i>.self_attn.q_proj -> [layer, projection index]. */
export function parseModulePath(path: string): [number, number] {
  const m = MODULE_RE.exec(path);
  const proj = m ? PROJECTIONS.indexOf(m[2] as Projection) : -1;
  const attn = proj >= 0 && proj <= 3;
  if (!m || proj < 0 || path.includes(attn ? '.mlp.' : '.self_attn.')) {
    throw new TypeError(
      `module "${path}" is not a Llama-family projection (model.layers.<i>.self_attn.{q,k,v,o}_proj or .mlp.{gate,up,down}_proj)`,
    );
  }
  return [Number(m[1]), proj];
}

export function modulePath(layer: number, proj: number): string {
  const name = PROJECTIONS[proj];
  if (name === undefined) throw new TypeError(`projection index ${proj} is out of range`);
  return `model.layers.${layer}.${proj <= 3 ? 'self_attn' : 'mlp'}.${name}`;
}

function checkBatch(b: TokenBatch, what: string, config: ModelConfig): void {
  if (typeof b !== 'object' || b === null) throw new TypeError(`${what} must be { tokens, labels?, rows, seq }`);
  if (!Number.isSafeInteger(b.rows) || b.rows < 1 || !Number.isSafeInteger(b.seq) || b.seq < 1) {
    throw new TypeError(`${what}.rows and ${what}.seq must be positive integers`);
  }
  if (b.seq > config.maxPositionEmbeddings) {
    throw new TypeError(`${what}.seq (${b.seq}) exceeds the model's max_position_embeddings (${config.maxPositionEmbeddings})`);
  }
  if (!(b.tokens instanceof Int32Array) || b.tokens.length !== b.rows * b.seq) {
    throw new TypeError(`${what}.tokens must be an Int32Array of rows x seq = ${b.rows * b.seq} token ids`);
  }
  if (b.labels !== undefined && (!(b.labels instanceof Int32Array) || b.labels.length !== b.rows * b.seq)) {
    throw new TypeError(`${what}.labels must be an Int32Array of rows x seq = ${b.rows * b.seq} ids or -100`);
  }
  if (b.segments !== undefined && (!(b.segments instanceof Int32Array) || b.segments.length !== b.rows * b.seq)) {
    throw new TypeError(`${what}.segments must be an Int32Array of rows x seq = ${b.rows * b.seq} document numbers`);
  }
}

export interface LoraInitOptions {
  r: number;
  alpha: number;
  targets: readonly Projection[];
  useRslora?: boolean;
  /** Layers to adapt; default all. */
  layers?: readonly number[];
  /** PEFT's rank_pattern / alpha_pattern: regex key k matches module m if (.*\.)?(k)$ does; first match wins. */
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  seed: Seed;
}

/**
 * PEFT's default LoRA init (METHODS §1.1): A ~ U(−1/√in, 1/√in) (kaiming_uniform, a = √5),
 * B = 0, drawn from Philox(seed, stream of "lora_init:<module>:A") so a seed reproduces it.
 */
export function initLora(config: ModelConfig, o: LoraInitOptions): Record<string, LoraModule> {
  if (!Number.isSafeInteger(o.r) || o.r < 1) throw new TypeError('r must be a positive integer');
  if (!Number.isFinite(o.alpha) || o.alpha <= 0) throw new TypeError('alpha must be a positive number');
  if (o.targets.length === 0 || o.targets.some((t) => !PROJECTIONS.includes(t))) {
    throw new TypeError(`targets must be a non-empty subset of ${PROJECTIONS.join(', ')}`);
  }
  const layers = o.layers ?? Array.from({ length: config.numLayers }, (_, i) => i);
  for (const [k, v] of Object.entries({ ...o.rankPattern, ...o.alphaPattern })) {
    if (!(Number.isFinite(v) && v > 0)) throw new TypeError(`pattern "${k}" must map to a positive number`);
  }
  const qd = config.numHeads * config.headDim;
  const kvd = config.numKvHeads * config.headDim;
  const dims: Record<Projection, [number, number]> = {
    q_proj: [qd, config.hiddenSize],
    k_proj: [kvd, config.hiddenSize],
    v_proj: [kvd, config.hiddenSize],
    o_proj: [config.hiddenSize, qd],
    gate_proj: [config.intermediateSize, config.hiddenSize],
    up_proj: [config.intermediateSize, config.hiddenSize],
    down_proj: [config.hiddenSize, config.intermediateSize],
  };
  const out: Record<string, LoraModule> = {};
  for (const layer of layers) {
    if (!Number.isSafeInteger(layer) || layer < 0 || layer >= config.numLayers) {
      throw new TypeError(`layer ${layer} is out of range (the model has ${config.numLayers} layers)`);
    }
    for (const t of o.targets) {
      const [outDim, inDim] = dims[t];
      const path = modulePath(layer, PROJECTIONS.indexOf(t));
      const r = patternValue(o.rankPattern, path) ?? o.r;
      if (!Number.isSafeInteger(r)) throw new TypeError(`rankPattern gives ${path} a rank that is not an integer`);
      const alpha = patternValue(o.alphaPattern, path) ?? o.alpha;
      const u = philox(o.seed, streamId(`lora_init:${path}:A`), r * inDim, 'uniform');
      const bound = 1 / Math.sqrt(inDim);
      const A = new Float32Array(u.length);
      for (let i = 0; i < u.length; i++) A[i] = (2 * (u[i] ?? 0) - 1) * bound;
      const scale = o.useRslora ? alpha / Math.sqrt(r) : alpha / r;
      out[path] = { r, in: inDim, out: outDim, A, B: new Float32Array(outDim * r), scale };
    }
  }
  return out;
}

/** A loaded base model with its adapter and optimizer state (one native session). */
export class TrainModel {
  readonly config: ModelConfig;
  readonly #session: unknown;
  #modules = new Map<string, [number, number]>();
  /** Native calls in flight: the synchronous methods would block the event loop on the session lock until they end. */
  #pending = 0;
  #generateEngine: 'cpu' | 'cuda' | undefined;

  async #run<T>(p: () => Promise<T>): Promise<T> {
    this.#pending++;
    try {
      return await call(p);
    } finally {
      this.#pending--;
    }
  }

  #idle(what: string): void {
    if (this.#pending > 0) throw new TypeError(`${what} while a forward, step or generation is running: await it first`);
  }

  private constructor(session: unknown, config: ModelConfig) {
    this.#session = session;
    this.config = config;
  }

  /** Loads config.json + model.safetensors (or the shards of model.safetensors.index.json); f32/bf16/f16 weights. */
  static async load(dir: string): Promise<TrainModel> {
    if (typeof dir !== 'string' || dir === '') throw new TypeError('dir must be a model directory path');
    const { session, config } = await call(() => native().trainLoadModel(dir));
    return new TrainModel(session, config);
  }

  /**
   * Replaces the adapter by `modules` (keyed by module path, e.g. model.layers.0.self_attn.q_proj);
   * optimizer moments and the step count restart. A module with an entry in `magnitudes` ([out], PEFT's
   * lora_magnitude_vector) is DoRA (METHODS §1.3); one with an entry in `cores` ([r, r]) is
   * LoRA-SB (§1.7): ΔW = scale·B R A with A and B frozen and only R trained.
   */
  setAdapter(
    modules: Record<string, LoraModule>,
    magnitudes: Record<string, Float32Array> = {},
    cores: Record<string, Float32Array> = {},
  ): void {
    this.#idle('setAdapter()');
    for (const name of Object.keys(magnitudes)) {
      if (!(name in modules)) throw new TypeError(`magnitudes["${name}"] has no module in the adapter`);
    }
    for (const [name, R] of Object.entries(cores)) {
      const m = modules[name];
      if (!m) throw new TypeError(`cores["${name}"] has no module in the adapter`);
      if (!(R instanceof Float32Array) || R.length !== m.r * m.r)
        throw new TypeError(`cores["${name}"] must be a Float32Array of r x r = ${m.r * m.r}`);
      if (name in magnitudes) throw new TypeError(`module "${name}" cannot be both DoRA and LoRA-SB`);
    }
    for (const [layer, proj] of this.#modules.values()) {
      native().trainSetLora(this.#session, layer, proj, 0, 0, new Float32Array(0), new Float32Array(0));
    }
    this.#modules.clear();
    native().trainSetStep(this.#session, 0);
    for (const [path, m] of Object.entries(modules)) {
      const [layer, proj] = parseModulePath(path);
      if (layer >= this.config.numLayers) throw new TypeError(`module "${path}": the model has ${this.config.numLayers} layers`);
      if (!Number.isSafeInteger(m.r) || m.r < 1 || !Number.isFinite(m.scale)) {
        throw new TypeError(`module "${path}": r must be a positive integer and scale finite`);
      }
      const mag = magnitudes[path];
      if (mag !== undefined && !(mag instanceof Float32Array)) throw new TypeError(`magnitudes["${path}"] must be a Float32Array`);
      native().trainSetLora(this.#session, layer, proj, m.r, m.scale, m.A, m.B, mag, cores[path]);
      this.#modules.set(path, [layer, proj]);
    }
  }

  /** Adapter, DoRA magnitudes, AdamW moments and step: what a checkpoint stores. */
  state(): TrainState {
    this.#idle('state()');
    const moments: Record<string, Moments> = {};
    for (const [path, [layer, proj]] of this.#modules) {
      const s = native().trainGetLora(this.#session, layer, proj, true);
      if (s.moments) moments[path] = s.moments;
    }
    const cores = this.cores();
    return {
      step: native().trainGetStep(this.#session),
      modules: this.adapter(),
      magnitudes: this.magnitudes(),
      ...(Object.keys(cores).length ? { cores } : {}),
      moments,
    };
  }

  /** Restores state() output (from this model's shape): the next step continues the same run. */
  restore(state: TrainState): void {
    this.#idle('restore()');
    this.setAdapter(state.modules, state.magnitudes, state.cores ?? {});
    for (const [path, m] of Object.entries(state.moments)) {
      const [layer, proj] = parseModulePath(path);
      if (!this.#modules.has(path)) throw new TypeError(`moments["${path}"] has no module in the adapter`);
      native().trainSetMoments(this.#session, layer, proj, m);
    }
    if (!Number.isSafeInteger(state.step) || state.step < 0) throw new TypeError('step must be a non-negative integer');
    native().trainSetStep(this.#session, state.step);
  }

  /**
   * PEFT's lora_dropout on every adapter's input in training (trainStep, forward with
   * train): masks from Philox(seed, "dropout:<module>:<step>:<micro-batch>"), so a resumed
   * run redraws the same ones. DoRA modules recompute W·drop(x) as PEFT does.
   */
  setDropout(p: number, seed: Seed): void {
    this.#idle('setDropout()');
    if (!(typeof p === 'number' && p >= 0 && p < 1)) throw new TypeError('dropout must be a number in [0, 1)');
    native().trainSetDropout(this.#session, p, seed);
  }

  /** The frozen weight [out, in] this model uses for a projection (an override, or the file's). */
  baseWeight(module: string): Float32Array {
    const [layer, proj] = parseModulePath(module);
    return native().trainBaseWeight(this.#session, layer, proj);
  }

  /** Replaces a projection's frozen weight for this model only (PiSSA's W_res); null restores the file's. */
  setBaseWeight(module: string, w: Float32Array | null): void {
    this.#idle('setBaseWeight()');
    const [layer, proj] = parseModulePath(module);
    if (w !== null && !(w instanceof Float32Array)) throw new TypeError('w must be a Float32Array or null');
    native().trainSetBaseWeight(this.#session, layer, proj, w);
  }

  /**
   * Activation recomputation: keep only each layer's input and recompute its forward in
   * the backward, so one layer's activations are in memory instead of all (about a third
   * more compute). Results are bit-identical either way.
   */
  setRecompute(on: boolean): void {
    this.#idle('setRecompute()');
    native().trainSetRecompute(this.#session, on === true);
  }

  /**
   * Frozen-weight gradient capture (METHODS P17, LoRA-GA §1.5, LoRA-SB §1.7): while on for
   * a module, every backward adds its ∂L/∂W = dYᵀX [out, in] (fp32) into a buffer read by
   * weightGradient(); turning it on zeroes the buffer, off frees it.
   */
  captureWeightGradient(module: string, on: boolean): void {
    this.#idle('captureWeightGradient()');
    const [layer, proj] = parseModulePath(module);
    native().trainSetWeightGrad(this.#session, layer, proj, on === true);
  }

  /** The ∂L/∂W accumulated since captureWeightGradient(module, true), [out, in]. */
  weightGradient(module: string): Float32Array {
    this.#idle('weightGradient()');
    const [layer, proj] = parseModulePath(module);
    const g = native().trainWeightGrad(this.#session, layer, proj);
    if (!g) throw new TypeError(`no weight gradient is captured for "${module}": call captureWeightGradient first`);
    return g;
  }

  /** A module's input X [rows·seq, in] in the last forward (EVA, METHODS P18); needs recomputation off. */
  moduleInput(module: string): Float32Array {
    this.#idle('moduleInput()');
    const [layer, proj] = parseModulePath(module);
    return native().trainModuleInput(this.#session, layer, proj);
  }

  /** The dropout mask (0 or 1/(1-p) per entry, [n, in]) a module's input gets at (step, micro-batch). */
  dropoutMask(module: string, step: number, micro: number, n: number): Float32Array {
    const [layer, proj] = parseModulePath(module);
    for (const [k, v] of Object.entries({ step, micro, n })) {
      if (!Number.isSafeInteger(v) || v < 0) throw new TypeError(`${k} must be a non-negative integer`);
    }
    return native().trainDropoutMask(this.#session, layer, proj, step, micro, n);
  }

  /** The DoRA magnitudes by module path (empty without DoRA modules). */
  magnitudes(): Record<string, Float32Array> {
    this.#idle('magnitudes()');
    const out: Record<string, Float32Array> = {};
    for (const [path, [layer, proj]] of this.#modules) {
      const s = native().trainGetLora(this.#session, layer, proj);
      if (s.magnitude) out[path] = s.magnitude;
    }
    return out;
  }

  /** The LoRA-SB cores R [r, r] by module path (empty without LoRA-SB modules). */
  cores(): Record<string, Float32Array> {
    this.#idle('cores()');
    const out: Record<string, Float32Array> = {};
    for (const [path, [layer, proj]] of this.#modules) {
      const s = native().trainGetLora(this.#session, layer, proj);
      if (s.R) out[path] = s.R;
    }
    return out;
  }

  /** The adapter's current factors by module path (LoRA-SB: the frozen A and B; see cores()). */
  adapter(): Record<string, LoraModule> {
    this.#idle('adapter()');
    const out: Record<string, LoraModule> = {};
    for (const [path, [layer, proj]] of this.#modules) {
      const s = native().trainGetLora(this.#session, layer, proj);
      out[path] = { r: s.r, in: s.A.length / s.r, out: s.B.length / s.r, A: s.A, B: s.B, scale: s.scale };
    }
    return out;
  }

  /** The gradients of the last backward (or of the last step, before clipping scaled them) by module path. */
  gradients(): Record<string, { A: Float32Array; B: Float32Array; magnitude?: Float32Array; R?: Float32Array }> {
    this.#idle('gradients()');
    const out: Record<string, { A: Float32Array; B: Float32Array; magnitude?: Float32Array; R?: Float32Array }> = {};
    for (const [path, [layer, proj]] of this.#modules) {
      const s = native().trainGetLora(this.#session, layer, proj);
      out[path] = {
        A: s.gradA,
        B: s.gradB,
        ...(s.gradMagnitude ? { magnitude: s.gradMagnitude } : {}),
        ...(s.gradR ? { R: s.gradR } : {}),
      };
    }
    return out;
  }

  /**
   * Logits (on request) and mean loss of one batch; `backward` also computes the adapters'
   * gradients of that loss; `train` applies LoRA dropout (the masks of the current step, micro-batch 0).
   */
  async forward(batch: TokenBatch, o: { logits?: boolean; backward?: boolean; train?: boolean } = {}): Promise<ForwardResult> {
    checkBatch(batch, 'batch', this.config);
    if (o.backward && !batch.labels) throw new TypeError('backward needs batch.labels');
    const opts = { logits: o.logits ?? false, backward: o.backward ?? false, train: o.train ?? false };
    const r = await this.#run(() => native().trainForward(this.#session, batch, opts));
    return {
      loss: r.count > 0 ? r.lossSum / r.count : Number.NaN,
      count: r.count,
      ...(r.logits ? { logits: r.logits } : {}),
      engine: r.engine,
    };
  }

  /** Mean loss and perplexity over held-out batches (a forward each, no gradients; on the device engine after useDevice()). */
  async evaluate(batches: TokenBatch[]): Promise<{ loss: number; perplexity: number; tokens: number; engine: TrainEngineKind }> {
    if (!Array.isArray(batches) || batches.length === 0) throw new TypeError('batches must be a non-empty array');
    let sum = 0;
    let tokens = 0;
    let engine: TrainEngineKind = 'cpu';
    for (const [i, b] of batches.entries()) {
      checkBatch(b, `batches[${i}]`, this.config);
      if (!b.labels) throw new TypeError(`batches[${i}].labels is required for evaluation`);
      const r = await this.#run(() => native().trainForward(this.#session, b, { logits: false, backward: false }));
      sum += r.lossSum;
      tokens += r.count;
      engine = r.engine;
    }
    if (tokens === 0) throw new TypeError('the evaluation batches have no labelled token');
    return { loss: sum / tokens, perplexity: Math.exp(sum / tokens), tokens, engine };
  }

  /** Continues each prompt by maxNewTokens tokens (KV cache, adapter applied); returns [rows, maxNewTokens]. */
  async generate(req: GenerateRequest, o: GenerateOptions = {}): Promise<Int32Array> {
    const { prompt, rows, maxNewTokens } = req;
    if (!(prompt instanceof Int32Array) || !Number.isSafeInteger(rows) || rows < 1 || prompt.length % rows !== 0 || prompt.length === 0) {
      throw new TypeError('prompt must be a non-empty Int32Array of rows equal-length prompts');
    }
    if (!Number.isSafeInteger(maxNewTokens) || maxNewTokens < 1) throw new TypeError('maxNewTokens must be a positive integer');
    const promptLen = prompt.length / rows;
    if (promptLen + maxNewTokens > this.config.maxPositionEmbeddings) {
      throw new TypeError(
        `prompt length + maxNewTokens (${promptLen + maxNewTokens}) exceeds max_position_embeddings (${this.config.maxPositionEmbeddings})`,
      );
    }
    if (o.temperature !== undefined && !(o.temperature >= 0 && Number.isFinite(o.temperature)))
      throw new TypeError('temperature must be >= 0');
    if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new TypeError('topP must be in (0, 1]');
    const { leftPad } = req;
    if (leftPad !== undefined) {
      if (!Array.isArray(leftPad) || leftPad.length !== rows || leftPad.some((p) => !Number.isSafeInteger(p) || p < 0 || p >= promptLen)) {
        throw new TypeError(`leftPad must give each of the ${rows} rows a padding count in [0, ${promptLen})`);
      }
    }
    const r = await this.#run(() => native().trainGenerate(this.#session, prompt, rows, promptLen, maxNewTokens, o, leftPad));
    this.#generateEngine = r.engine;
    return r.tokens;
  }

  /**
   * Where the last generate() ran its forward: 'cuda' after useDevice() (the KV caches and
   * the model on the device; the decoding loop and sampling are the CPU's, so the tokens are
   * the CPU engine's within the logits' tolerance), else 'cpu'. Undefined before any.
   */
  get generateEngine(): 'cpu' | 'cuda' | undefined {
    return this.#generateEngine;
  }

  /**
   * Trains the next steps on the CUDA backend's device-resident engine (docs/cuda.md): the
   * frozen weights go up once, the adapter, its gradients and AdamW moments stay on the
   * device; evaluate() runs there too; every other reader (adapter(), gradients(), state(),
   * forward with logits or backward, generate, which run on the CPU engine) sees them copied
   * back first. Answers
   * { engine: 'cpu', reason } and changes nothing when the backend is not CUDA or the
   * adapter uses a feature the device engine lacks (DoRA with dropout, LoRA-SB,
   * weight-gradient capture); a step after setAdapter() switched to such a feature fails (invalid_request,
   * the message naming it).
   */
  async useDevice(precision: ComputePrecision = 'f32'): Promise<DeviceChoice> {
    return this.#run(() => native().trainUseDevice(this.#session, precision));
  }

  /** Copies the device engine's state back and frees it; later steps run on the CPU engine. */
  async releaseDevice(): Promise<void> {
    await this.#run(() => native().trainReleaseDevice(this.#session));
  }

  /** One optimizer step over micro-batches (gradient accumulation), then the schedule advances. */
  async trainStep(microBatches: TokenBatch[], optimizer: OptimizerOptions): Promise<StepResult> {
    if (!Array.isArray(microBatches) || microBatches.length === 0) throw new TypeError('microBatches must be a non-empty array');
    microBatches.forEach((b, i) => {
      checkBatch(b, `microBatches[${i}]`, this.config);
      if (!b.labels) throw new TypeError(`microBatches[${i}].labels is required for training`);
    });
    if (this.#modules.size === 0) throw new TypeError('set an adapter (setAdapter) before training');
    return this.#run(() => native().trainStep(this.#session, microBatches, optimizer));
  }
}

export interface GenerateRequest {
  /** rows prompts of equal length, row-major (shorter ones left-padded, see leftPad). */
  prompt: Int32Array;
  rows: number;
  maxNewTokens: number;
  /** Per row, how many leading tokens are padding (never attended to; positions start after them). */
  leftPad?: number[];
}
/** transformers' schedule multiplier at scheduler step `step` (the first optimizer step uses step 0). */
export function lrLambda(o: OptimizerOptions, step: number): number {
  try {
    return native().trainLrLambda(o, step);
  } catch (err) {
    throw toError(err);
  }
}

/**
 * Threads of the engine's pool (default: the machine's cores). Training calls run BLAS
 * single-threaded inside the pool's blocks; results are bit-reproducible for a given count.
 */
export function setTrainThreads(n: number): void {
  if (!Number.isSafeInteger(n) || n < 1) throw new TypeError('threads must be a positive integer');
  native().trainSetThreads(n);
}

export function trainThreads(): number {
  return native().trainThreads();
}
