/**
 * The API token the catalog sends, kept in sessionStorage (gone when the tab closes) and
 * observable, so pages refetch when someone signs in or out.
 */
import { useSyncExternalStore } from 'react';

const KEY = 'lowrank.token';
const listeners = new Set<() => void>();

export function getToken(): string | null {
  return sessionStorage.getItem(KEY);
}

export function setToken(token: string | null): void {
  if (token) sessionStorage.setItem(KEY, token);
  else sessionStorage.removeItem(KEY);
  for (const l of listeners) l();
}

function subscribe(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function useToken(): string | null {
  return useSyncExternalStore(subscribe, getToken);
}
