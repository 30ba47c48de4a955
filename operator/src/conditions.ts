/**
 * metav1.Condition bookkeeping: one condition per type; lastTransitionTime moves only when
 * the status flips, so an unchanged state writes an identical status (no update loop).
 */
export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime?: string;
}

export function setCondition(list: Condition[], next: Condition, now: string): Condition[] {
  const prev = list.find((c) => c.type === next.type);
  const lastTransitionTime = prev && prev.status === next.status && prev.lastTransitionTime ? prev.lastTransitionTime : now;
  const merged = { ...next, lastTransitionTime };
  return prev ? list.map((c) => (c.type === next.type ? merged : c)) : [...list, merged];
}

export function getCondition(list: Condition[] | undefined, type: string): Condition | undefined {
  return list?.find((c) => c.type === type);
}
