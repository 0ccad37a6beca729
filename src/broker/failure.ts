/**
 * The error answer to a request whose handling threw. A shared registry that failed
 * (ERR_REGISTRY_UNAVAILABLE) is the broker's trouble, not the peer's: 500 "registry
 * unavailable", without the details (they name the operator's Redis; the registry
 * reports them to the operator). A malformed request is 400 with what was wrong;
 * anything else is 500 "internal error".
 */
import { ErrorCode, isNattravError } from '../errors.js';
import { StunErrorCode } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';

/** The error response to `request` for `err`. */
export function failureAnswer(request: StunMessage, err: unknown): StunMessage {
  if (isNattravError(err) && err.code === ErrorCode.RegistryUnavailable) return request.errorResponse(StunErrorCode.ServerError, 'registry unavailable');
  if (isNattravError(err)) return request.errorResponse(StunErrorCode.BadRequest, err.message);
  return request.errorResponse(StunErrorCode.ServerError, 'internal error');
}
