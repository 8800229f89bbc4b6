import { useEffect, useRef } from 'react';
import { ApiError, isBusy, isUnreachable } from '../api/client';

/** Waits before each try made by itself after a failure of the moment; the last one repeats. */
const RETRY_DELAYS_MS = [2000, 5000, 10000, 30000];

/**
 * While `failure` is an outage of the moment (the server out of reach, or refusing with 429 or
 * 503), tries `retry` again by itself, waiting longer each time, or as long as `Retry-After` asks:
 * a page left open recovers once the server is back, without the user pressing Retry. The waits
 * start over once `succeeded`.
 */
export function useRetryWhileOut(failure: unknown, succeeded: boolean, retry: () => void) {
  const attempts = useRef(0);
  if (succeeded) attempts.current = 0;
  useEffect(() => {
    if (failure === null || !(isUnreachable(failure) || isBusy(failure))) return;
    const wait = RETRY_DELAYS_MS[Math.min(attempts.current, RETRY_DELAYS_MS.length - 1)] ?? 0;
    const asked = failure instanceof ApiError && failure.retryAfter !== undefined ? failure.retryAfter * 1000 : 0;
    attempts.current += 1;
    const timer = setTimeout(retry, Math.max(wait, asked));
    return () => clearTimeout(timer);
  }, [failure, retry]);
}
