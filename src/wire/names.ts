/** Human-readable names of attribute types, for error messages and logs. */
import { AttrType } from './constants.js';

const NAMES: ReadonlyMap<number, string> = new Map<number, string>([
  [AttrType.MappedAddress, 'MAPPED-ADDRESS'],
  [AttrType.ChangeRequest, 'CHANGE-REQUEST'],
  [AttrType.Username, 'USERNAME'],
  [AttrType.MessageIntegrity, 'MESSAGE-INTEGRITY'],
  [AttrType.ErrorCode, 'ERROR-CODE'],
  [AttrType.UnknownAttributes, 'UNKNOWN-ATTRIBUTES'],
  [AttrType.Realm, 'REALM'],
  [AttrType.Nonce, 'NONCE'],
  [AttrType.MessageIntegritySha256, 'MESSAGE-INTEGRITY-SHA256'],
  [AttrType.XorMappedAddress, 'XOR-MAPPED-ADDRESS'],
  [AttrType.Padding, 'PADDING'],
  [AttrType.ResponsePort, 'RESPONSE-PORT'],
  [AttrType.Software, 'SOFTWARE'],
  [AttrType.AlternateServer, 'ALTERNATE-SERVER'],
  [AttrType.Fingerprint, 'FINGERPRINT'],
  [AttrType.ResponseOrigin, 'RESPONSE-ORIGIN'],
  [AttrType.OtherAddress, 'OTHER-ADDRESS'],
  [AttrType.Uri, 'URI'],
  [AttrType.AttemptId, 'ATTEMPT-ID'],
  [AttrType.PrivateEndpoint, 'PRIVATE-ENDPOINT'],
  [AttrType.PeerPublicEndpoint, 'PEER-PUBLIC-ENDPOINT'],
  [AttrType.PeerPrivateEndpoint, 'PEER-PRIVATE-ENDPOINT'],
  [AttrType.StartDelay, 'START-DELAY'],
  [AttrType.Lifetime, 'LIFETIME'],
  [AttrType.Strategy, 'STRATEGY'],
  [AttrType.Role, 'ROLE'],
  [AttrType.Mapping, 'MAPPING'],
  [AttrType.PeerMapping, 'PEER-MAPPING'],
  [AttrType.FailedStrategies, 'FAILED-STRATEGIES'],
  [AttrType.PublicKey, 'PUBLIC-KEY'],
  [AttrType.Signature, 'SIGNATURE'],
  [AttrType.Certificate, 'CERTIFICATE'],
  [AttrType.EphemeralKey, 'EPHEMERAL-KEY'],
  [AttrType.Sequence, 'SEQUENCE'],
  [AttrType.Security, 'SECURITY'],
  [AttrType.RelayQuota, 'RELAY-QUOTA'],
  [AttrType.PeerKey, 'PEER-KEY'],
  [AttrType.AttemptSecret, 'ATTEMPT-SECRET'],
  [AttrType.MappingKey, 'MAPPING-KEY'],
  [AttrType.JoinAt, 'JOIN-AT'],
  [AttrType.MappedEndpoint, 'MAPPED-ENDPOINT'],
  [AttrType.BoundEndpoint, 'BOUND-ENDPOINT'],
  [AttrType.AlternatePort, 'ALTERNATE-PORT'],
  [AttrType.RequestPadding, 'REQUEST-PADDING'],
]);

/** The attribute's name (`'XOR-MAPPED-ADDRESS'`), or `'attribute 0x4e99'` for a type nattrav does not know. */
export function attributeName(type: number): string {
  return NAMES.get(type) ?? `attribute 0x${type.toString(16).padStart(4, '0')}`;
}
