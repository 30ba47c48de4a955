/**
 * Trans-LoRA stage 1 steps 1-3 (METHODS §4.1): candidates are generated in rounds few-shot
 * from the seeds, each round filtered by the discriminator (p_real >= acceptThreshold),
 * exact and n-gram Jaccard duplicates and over-length items dropped, until `keep` are
 * accepted or `candidates` were generated; the teacher (source base + source adapter)
 * then completes every accepted prompt. The generator and the discriminator may share the
 * source model: each round sets the adapter it needs.
 */

import type { TrainModel } from '../native/train.ts';
import type { PeftAdapter } from '../peft/adapter-dir.ts';
import type { TextTokenizer } from '../tokenizer/tokenizer.ts';
import { DedupFilter } from './dedup.ts';
import { type LabelTokens, scoreReal } from './discriminator.ts';
import { generateCandidates } from './fewshot.ts';
import type { SeedRecord } from './seed-crypto.ts';
import { continueTexts } from './text-gen.ts';

export interface Party {
  model: TrainModel;
  tok: TextTokenizer;
  /** The adapter to set before use ({} = the base alone). */
  adapter: PeftAdapter['modules'];
}

export interface SynthesizeOptions {
  candidates: number;
  keep: number;
  k: number;
  seed: number;
  temperature: number;
  topP: number;
  maxNewTokens: number;
  acceptThreshold: number;
  dedupJaccard: number;
  /** Longest prompt in tokens (of either tokenizer) that still leaves room for the completion. */
  maxPromptTokens: number;
  completionTokens: number;
  teacherDecoding: 'greedy' | 'sample';
  round?: number;
  onRound?: (s: SynthesisCounts) => Promise<void>;
}

export interface SynthesisCounts {
  generated: number;
  overLength: number;
  empty: number;
  rejected: number;
  duplicatesExact: number;
  duplicatesNear: number;
  accepted: number;
  meanPRealAccepted: number;
  meanPRealAll: number;
}

/** Candidates kept aside before filtering, to compare with the accepted ones (MMD to the seeds). */
const UNFILTERED_SAMPLE = 512;

export interface Synthesis extends SynthesisCounts {
  records: SeedRecord[];
  acceptedTexts: string[];
  unfiltered: string[];
  teacherUnfinished: number;
}

export async function synthesize(
  generator: Party,
  discriminator: Party & { labels: LabelTokens; maxLen: number },
  teacher: Party,
  student: TextTokenizer,
  seeds: SeedRecord[],
  o: SynthesizeOptions,
): Promise<Synthesis> {
  const round = o.round ?? 256;
  const dedup = new DedupFilter(o.dedupJaccard);
  const accepted: string[] = [];
  const unfiltered: string[] = [];
  const c = { generated: 0, overLength: 0, empty: 0, rejected: 0 };
  let sumAll = 0;
  let sumAccepted = 0;
  for (let r = 0; accepted.length < o.keep && c.generated < o.candidates; r++) {
    generator.model.setAdapter(generator.adapter);
    const batch = await generateCandidates(
      generator.model,
      generator.tok,
      seeds.map((s) => s.prompt),
      {
        count: Math.min(round, o.candidates - c.generated),
        k: o.k,
        seed: o.seed * 7919 + r,
        temperature: o.temperature,
        topP: o.topP,
        maxNewTokens: o.maxNewTokens,
      },
    );
    c.generated += batch.generated;
    c.overLength += batch.overLength;
    c.empty += batch.empty;
    const fit = batch.texts.filter((t) => {
      const ok = Math.max(teacher.tok.encode(t).length, student.encode(t).length) <= o.maxPromptTokens;
      if (!ok) c.overLength++;
      return ok;
    });
    unfiltered.push(...fit.slice(0, UNFILTERED_SAMPLE - unfiltered.length));
    discriminator.model.setAdapter(discriminator.adapter);
    const p = await scoreReal(discriminator.model, discriminator.tok, discriminator.labels, fit, discriminator.maxLen);
    fit.forEach((text, i) => {
      const pr = p[i] as number;
      sumAll += pr;
      if (accepted.length >= o.keep) return;
      if (pr < o.acceptThreshold) c.rejected++;
      else if (dedup.admit(text)) {
        accepted.push(text);
        sumAccepted += pr;
      }
    });
    const counts = summary();
    await o.onRound?.(counts);
  }
  function summary(): SynthesisCounts {
    const scored = c.generated - c.overLength - c.empty;
    return {
      ...c,
      duplicatesExact: dedup.exact,
      duplicatesNear: dedup.near,
      accepted: accepted.length,
      meanPRealAccepted: accepted.length ? sumAccepted / accepted.length : 0,
      meanPRealAll: scored > 0 ? sumAll / scored : 0,
    };
  }

  // The teacher completes each accepted prompt; one that does not finish (eos) is dropped.
  teacher.model.setAdapter(teacher.adapter);
  const sampled = o.teacherDecoding === 'sample';
  const outs = await continueTexts(teacher.model, teacher.tok, accepted, {
    maxNewTokens: o.completionTokens,
    ...(sampled ? { temperature: o.temperature, topP: o.topP, seed: o.seed + 1 } : {}),
  });
  const records: SeedRecord[] = [];
  let teacherUnfinished = 0;
  outs.forEach((out, i) => {
    if (out.ended && out.text.trim() !== '') records.push({ prompt: accepted[i] as string, completion: out.text });
    else teacherUnfinished++;
  });
  return { ...summary(), records, acceptedTexts: accepted, unfiltered, teacherUnfinished };
}
