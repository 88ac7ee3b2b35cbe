// herald-resume: gapless resume for a stock pusher-js client talking to
// Herald. See README.md for what it guarantees and how it hooks pusher-js;
// docs/protocol-extensions.md (in the Herald repository) for the wire form.
//
// This file is the source. dist/herald-resume.js (UMD: a plain <script> tag,
// CommonJS require, AMD) is generated from it by build.mjs; do not edit that
// one by hand.

/** The version of this package. */
export const VERSION = '0.1.0';

const RESUME_OK = 'pusher_internal:resume_ok';
const RESUME_FAILED = 'pusher_internal:resume_failed';

/** Channel event emitted after a successful resume: data {from, to, replayed}. */
export const EVENT_RESUME_OK = 'herald:resume_ok';
/**
 * Channel event emitted when events were missed and could not be replayed:
 * data {from, reason, first}. The app should refetch the channel's state.
 */
export const EVENT_RESUME_FAILED = 'herald:resume_failed';

const INSTALLED = '__heraldResume';

/**
 * Turns resume on for a pusher-js (8.x) client and returns the same client.
 *
 * From then on the client remembers, per subscribed channel, the serial of
 * the last event it delivered; when pusher-js subscribes again after a
 * reconnect, the subscribe carries that serial as herald_resume and Herald
 * replays what the channel missed. Events whose serial was already delivered
 * are dropped before pusher-js sees them, so the app gets each event once,
 * in order.
 *
 * Options:
 *  - replayFromStart (false): subscribe channels that have not delivered an
 *    event yet with herald_resume 0, i.e. replay everything Herald's window
 *    still holds for them.
 *  - onResumeFailed(channelName, data): called when Herald reports that the
 *    channel missed events it cannot replay (data: {from, reason, first}).
 *    The same report is emitted on the channel as 'herald:resume_failed'.
 *  - onResumeOk(channelName, data): called after a successful resume (data:
 *    {from, to, replayed}); also emitted on the channel as 'herald:resume_ok'.
 *
 * Calling it twice on one client returns the client unchanged.
 *
 * @template P
 * @param {P} pusher a pusher-js Pusher instance
 * @param {{replayFromStart?: boolean,
 *          onResumeFailed?: (channel: string, data: object) => void,
 *          onResumeOk?: (channel: string, data: object) => void}} [options]
 * @returns {P}
 */
export function withResume(pusher, options) {
  if (!pusher || !pusher.connection || typeof pusher.send_event !== 'function') {
    throw new TypeError('withResume: expected a pusher-js Pusher instance');
  }
  if (pusher[INSTALLED]) {
    return pusher;
  }
  const state = new ResumeState(pusher, options || {});
  Object.defineProperty(pusher, INSTALLED, { value: state.api, enumerable: false });
  state.install();
  return pusher;
}

/**
 * The resume state of a client, or undefined when withResume was not called
 * on it: {lastSerial(channel), stats: {delivered, duplicates, resumed,
 * resumeFailed}}. For tests and diagnostics.
 */
export function resumeState(pusher) {
  return pusher ? pusher[INSTALLED] : undefined;
}

class ResumeState {
  constructor(pusher, options) {
    this.pusher = pusher;
    this.replayFromStart = Boolean(options.replayFromStart);
    this.onResumeFailed = options.onResumeFailed;
    this.onResumeOk = options.onResumeOk;
    // channel name -> last serial delivered. Only channels pusher-js has
    // (pusher.channel(name)) get an entry; unsubscribing removes it.
    this.last = new Map();
    this.stats = { delivered: 0, duplicates: 0, resumed: 0, resumeFailed: 0 };
    this.warned = false;
    const self = this;
    this.api = {
      lastSerial(channel) {
        return self.last.get(channel);
      },
      get stats() {
        return { ...self.stats };
      },
    };
  }

  install() {
    const pusher = this.pusher;
    // 1. Outgoing: pusher-js sends every subscribe and unsubscribe through
    // pusher.send_event (Channel.subscribe, Channel.unsubscribe).
    const send = pusher.send_event;
    pusher.send_event = (event, data, channel) => send.call(pusher, event, this.outgoing(event, data), channel);

    // 2. Incoming: each new connection's transport, hooked as soon as it is
    // connected (nothing but the handshake has been read then).
    pusher.connection.bind('connected', () => this.hookTransport());
    if (pusher.connection.state === 'connected') {
      this.hookTransport();
    }
  }

  /** Adds herald_resume to a subscribe; forgets a channel on unsubscribe. */
  outgoing(event, data) {
    if (!data || typeof data.channel !== 'string') {
      return data;
    }
    if (event === 'pusher:subscribe') {
      const last = this.last.get(data.channel);
      if (last !== undefined) {
        return { ...data, herald_resume: last };
      }
      if (this.replayFromStart) {
        return { ...data, herald_resume: 0 };
      }
    } else if (event === 'pusher:unsubscribe') {
      this.last.delete(data.channel);
    }
    return data;
  }

  /**
   * Wraps emit of the current connection's transport (pusher-js's
   * TransportConnection, internal but stable across 4.x-8.x), so that raw
   * frames are seen before pusher-js decodes them (its decoder keeps only
   * event, channel, data and user_id, not serial).
   */
  hookTransport() {
    const conn = this.pusher.connection.connection;
    const transport = conn && conn.transport;
    if (!transport || typeof transport.emit !== 'function') {
      if (!this.warned) {
        this.warned = true;
        // eslint-disable-next-line no-console
        console.warn('herald-resume: this pusher-js version has no connection.connection.transport; resume is off');
      }
      return;
    }
    if (transport[INSTALLED]) {
      return;
    }
    Object.defineProperty(transport, INSTALLED, { value: true, enumerable: false });
    const emit = transport.emit;
    const self = this;
    transport.emit = function (name, message) {
      if (name !== 'message') {
        return emit.apply(this, arguments);
      }
      const frame = self.inspect(message);
      if (frame === DROP) {
        return this;
      }
      const result = emit.apply(this, arguments);
      if (frame !== undefined) {
        self.report(frame);
      }
      return result;
    };
  }

  /**
   * Looks at one raw message. Returns DROP for a duplicate, a parsed resume
   * report to emit after pusher-js has handled the frame, or undefined.
   */
  inspect(message) {
    const raw = message && message.data;
    if (typeof raw !== 'string') {
      return undefined;
    }
    // Cheap filters first: most frames carry neither. "serial": cannot
    // occur inside a string-encoded data member (its quotes are escaped).
    const hasSerial = raw.indexOf('"serial":') >= 0;
    if (!hasSerial && raw.indexOf('pusher_internal:resume_') < 0) {
      return undefined;
    }
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch {
      return undefined;
    }
    if (!frame || typeof frame.channel !== 'string') {
      return undefined;
    }
    if (frame.event === RESUME_OK || frame.event === RESUME_FAILED) {
      return frame;
    }
    const serial = frame.serial;
    if (!Number.isSafeInteger(serial) || serial <= 0 || !this.pusher.channel(frame.channel)) {
      return undefined;
    }
    const last = this.last.get(frame.channel);
    if (last !== undefined && serial <= last) {
      this.stats.duplicates++;
      return DROP;
    }
    this.last.set(frame.channel, serial);
    this.stats.delivered++;
    return undefined;
  }

  /** Emits a resume report on its channel and calls the option callback. */
  report(frame) {
    let data = frame.data;
    if (typeof data === 'string') {
      try {
        data = JSON.parse(data);
      } catch {
        // keep the string
      }
    }
    const ok = frame.event === RESUME_OK;
    if (ok) {
      this.stats.resumed++;
    } else {
      this.stats.resumeFailed++;
    }
    const channel = this.pusher.channel(frame.channel);
    if (channel) {
      channel.emit(ok ? EVENT_RESUME_OK : EVENT_RESUME_FAILED, data);
    }
    const cb = ok ? this.onResumeOk : this.onResumeFailed;
    if (typeof cb === 'function') {
      cb(frame.channel, data);
    }
  }
}

const DROP = {};
