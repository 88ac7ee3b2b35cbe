// Types for herald-resume (index.mjs and dist/herald-resume.js).

export declare const VERSION: string;
/** Channel event after a successful resume; data {from, to, replayed}. */
export declare const EVENT_RESUME_OK: 'herald:resume_ok';
/** Channel event when missed events could not be replayed; data {from, reason, first}. */
export declare const EVENT_RESUME_FAILED: 'herald:resume_failed';

export interface ResumeOk {
  from: number;
  to: number;
  replayed: number;
}

export interface ResumeFailed {
  from: number;
  reason: 'window_passed' | 'unavailable' | 'disabled' | string;
  first?: number;
}

export interface ResumeOptions {
  /** Subscribe channels that delivered nothing yet with herald_resume 0 (replay the whole window). */
  replayFromStart?: boolean;
  onResumeFailed?: (channel: string, data: ResumeFailed) => void;
  onResumeOk?: (channel: string, data: ResumeOk) => void;
}

export interface ResumeState {
  lastSerial(channel: string): number | undefined;
  readonly stats: { delivered: number; duplicates: number; resumed: number; resumeFailed: number };
}

/** Turns resume on for a pusher-js client and returns the same client. */
export declare function withResume<P>(pusher: P, options?: ResumeOptions): P;
export declare function resumeState(pusher: unknown): ResumeState | undefined;
