/** `[HOST:]PORT` arguments of expose (the service) and forward (where to listen). */
import { checkPort, parseHostPort, type HostPort } from '../common/endpoint.js';
import { ErrorCode, NattravError } from '../errors.js';

/** The host of a bare `PORT`: loopback, so nothing is exposed or listened on beyond this machine by accident. */
export const DEFAULT_SERVICE_HOST = '127.0.0.1';

const EXPECTED = 'expected [HOST:]PORT such as 8080 or 127.0.0.1:8080';

/**
 * Parses `PORT`, `HOST:PORT` or `[IPv6]:PORT` (or takes a {@link HostPort}); a bare port means
 * {@link DEFAULT_SERVICE_HOST}. `what` names the argument in the error; `allowZero` admits
 * port 0 (listen on any free port).
 */
export function parseServiceAddress(value: string | HostPort, what: string, allowZero = false): HostPort {
  if (typeof value === 'object' && value !== null) {
    if (typeof value.host !== 'string' || value.host === '') {
      throw new NattravError(ErrorCode.InvalidArgument, `${what}: expected [HOST:]PORT or { host, port }`);
    }
    return { host: value.host, port: checkPort(value.port, what, allowZero) };
  }
  if (typeof value !== 'string') throw new NattravError(ErrorCode.InvalidArgument, `${what}: ${EXPECTED}`);
  const text = value.trim();
  if (/^\d+$/.test(text)) return { host: DEFAULT_SERVICE_HOST, port: checkPort(Number(text), what, allowZero) };
  if (text !== '' && !text.includes(':')) throw new NattravError(ErrorCode.InvalidArgument, `${what}: missing port in "${text}"; ${EXPECTED}`);
  try {
    const parsed = parseHostPort(text, what);
    return { host: parsed.host, port: checkPort(parsed.port, what, allowZero) };
  } catch (err) {
    const message = (err as Error).message;
    throw new NattravError(ErrorCode.InvalidArgument, `${message}; ${EXPECTED}`, { cause: err });
  }
}
