/**
 * nattrav: direct TCP connections between peers behind NATs and firewalls.
 *
 * A recipient registers a URI with a connection broker ({@link createServer});
 * an initiator looks it up ({@link connect}) and both open a direct TCP
 * connection through their NATs. The result is a real `net.Socket`.
 *
 * {@link expose} makes a local TCP service reachable by URI and {@link forward} carries
 * local connections to it, one peer connection each.
 *
 * This entry is the user API only: the broker, the peer side, expose/forward, NAT discovery
 * (netcheck), keys/CA/identities/TLS, errors and their types. Two more entries
 * carry the internals some tools need:
 * - `nattrav/wire`: the STUN codec (RFC 8489, RFC 5780) with nattrav's methods and attributes;
 * - `nattrav/lab`: the network-namespace NAT lab, the matrix runner, its report and the demo.
 *
 * @packageDocumentation
 */

export { ErrorCode, NattravError, isNattravError } from './errors.js';
export type { ErrorCodeValue, NattravErrorOptions } from './errors.js';

export { Broker, createBroker } from './broker/broker.js';
export type { BrokerEndpoint, BrokerEvent } from './broker/broker.js';
export type { BrokerOptions } from './broker/options.js';
export { BROKER_DEFAULTS } from './broker/options.js';
export type { WebSocketEndpoint, WebSocketListen } from './broker/websocket.js';
export type { RendezvousEvent } from './broker/rendezvous.js';
export type { FamilyRegistration, Registry, Registration } from './broker/registry/registry.js';
export { checkAnnounce } from './broker/family.js';
export { MemoryRegistry } from './broker/registry/memory.js';
/** Watching a broker: counters from its events as Prometheus metrics, and an HTTP status page / `/metrics` / `/healthz`. */
export { BrokerMonitor, monitorBroker, ATTEMPT_PATHS, MONITOR_DEFAULTS, NAT_MAPPING_LABELS, RELAY_END_REASONS, SETUP_BUCKETS_SECONDS, RECENT_ATTEMPTS } from './broker/http/monitor.js';
export type { AttemptPath, BrokerMonitorOptions, BrokerStatus, MonitoredBroker, NatMappingLabel, PathCounts, RecentAttempt, StatusSample } from './broker/http/monitor.js';
export { BrokerStatusServer, serveBrokerStatus, STATUS_SERVER_DEFAULTS } from './broker/http/status-server.js';
export type { StatusRequestEvent, StatusServerOptions } from './broker/http/status-server.js';
export { renderStatusPage } from './broker/http/status-page.js';
export type { StatusPageOptions } from './broker/http/status-page.js';
export type { MemoryRegistryOptions } from './broker/registry/memory.js';
export { RedisRegistry, connectRedis } from './broker/registry/redis.js';
export type { ConnectRedisOptions, RedisBackend } from './broker/registry/redis.js';
export type { RedisStoreOptions } from './broker/registry/redis-codec.js';
export { RedisConnection } from './broker/registry/redis-connection.js';
export type { RedisConnectionOptions } from './broker/registry/redis-connection.js';
export { RedisSessionStore } from './broker/registry/redis-sessions.js';
export { SessionTable } from './broker/sessions.js';
export type { BrokerBus } from './broker/bus/bus.js';
export { MemoryBusHub } from './broker/bus/memory-bus.js';
export { RedisBus } from './broker/bus/redis-bus.js';
export type { RedisBusOptions } from './broker/bus/redis-bus.js';
export type { SequenceVerdict, Session, SessionEndpoint, SessionStore } from './broker/sessions.js';

export { connect } from './peer/connect.js';
export { createServer, NattravServer } from './peer/server.js';
/** Datagram (UDP) channels: `connectDatagram()` on the initiator, the server's `'datagram'` event on the recipient. */
export { connectDatagram, type ConnectDatagramOptions } from './peer/datagram/connect.js';
export { DatagramChannel, DATAGRAM_KEEPALIVE_MS, DATAGRAM_PEER_TIMEOUT_MS, type ChannelState, type DatagramChannelInfo, type DatagramDrops, type DatagramEndpoint, type DatagramRemoteInfo, type DatagramStats, type DatagramTransport, type TransportHandlers, type ChannelParams } from './peer/datagram/channel.js';
export { MAX_DATAGRAM } from './peer/datagram/packets.js';
export type { AttemptRefusal, ConnectionListener, ConnectionRejection, RegistrationRetryEvent, ServerAddress } from './peer/server.js';
export { connectionInfo, resetConnection } from './peer/info.js';
export type { SecondFamilyRegistered } from './peer/second-family.js';
export { FAMILY_RACE_DELAY_MS, type Family } from './peer/family-race.js';
export type { CloseReason, ConnectionClosed, ConnectionInfo, ConnectionPath, ConnectionRole, NattravSocket, RelayQuota, StrategyTrace } from './peer/info.js';
export { STRATEGY_NAMES } from './nat/strategy.js';
export type { StrategyName } from './nat/strategy.js';
export type { BrokerAddress, ConnectOptions, ServerOptions } from './peer/options.js';
export { PEER_DEFAULTS, DEFAULT_BROKER_PORT } from './peer/options.js';
export { DIRECT_DIALER } from './peer/dialer.js';
export type { Dialer } from './peer/dialer.js';
export { bypassesProxy, describeProxy, dialerFromOptions, isSocks5Dialer, parseSocks5Proxy, socks5Dialer, socks5FromEnvironment } from './peer/socks5.js';
export type { Socks5Dialer, Socks5Proxy } from './peer/socks5.js';
export { Socks5BindAgent, BIND_BACKOFF, BIND_REFUSED_RETRY_MS, MAX_HELD } from './peer/socks5-bind.js';
export type { Socks5BindEvent, Socks5BindOptions, Socks5BindState } from './peer/socks5-bind.js';
export { WEB_STEP_TIMEOUT_MS, WebFallbackDialer, isBrokerUrl, parseBrokerUrl, webSocketDialer } from './peer/web/dialer.js';
export type { BrokerUrl, WebDialerOptions, WebFallbackEvent } from './peer/web/dialer.js';
export { maskUrl, parseHttpProxy, proxyFor } from './peer/web/http-proxy.js';
export type { HttpProxy } from './peer/web/http-proxy.js';
export { probeWeb } from './peer/web/probe.js';
export type { WebProbe } from './peer/web/probe.js';
export { MAX_BROKERS, parseBrokerList, toBrokerList } from './peer/brokers.js';
export type { RegisteredEvent, RegisteredInfo } from './peer/registration.js';
export { ADAPTIVE_KEEPALIVE_DEFAULTS, KEEPALIVE_FLOOR_MS, KEEPALIVE_LIFETIME_SHARE, keepaliveFromLifetime } from './peer/adaptive-keepalive.js';
export type { KeepaliveEvent } from './peer/adaptive-keepalive.js';
export type { MovedEvent, MoveReason } from './peer/mobility.js';
export type { RegistrationKind } from './peer/backoff.js';

export { expose, Exposer, EXPOSE_DEFAULTS } from './service/expose.js';
export type { ExposeOptions } from './service/expose.js';
export { forward, Forwarder, FORWARD_DEFAULTS } from './service/forward.js';
export type { ForwardOptions } from './service/forward.js';
export type { ServiceAccepted, ServiceClosed, ServiceConnected, ServiceEvent } from './service/events.js';
export type { ServiceCloseReason, SpliceResult } from './service/splice.js';
export { DEFAULT_SERVICE_HOST, parseServiceAddress } from './service/address.js';
export { PREAMBLE_MAGIC, PREAMBLE_VERSION, PREAMBLE_TIMEOUT_MS, PreambleStatusCode, decodePreamble, encodePreamble, readPreamble } from './service/preamble.js';
export type { Preamble, PreambleStatus } from './service/preamble.js';

export { describeNat, discoverNat, formatAllocation, DISCOVERY_DEFAULTS } from './nat/index.js';
export type { Behaviour, ClassicNatName, DiscoverNatOptions, NatProfile, PortAllocation, TcpProfile } from './nat/index.js';
export { measureNatLifetime, measureMappingLifetime, LIFETIME_SEARCH_DEFAULTS } from './nat/index.js';
export type { LifetimeIo, LifetimeProbeEvent, LifetimeSearchOptions, LifetimeSocket, MappingLifetime, MeasureLifetimeOptions, MeasureNatLifetimeOptions, SearchEnd } from './nat/index.js';

/** Port mapping on the local gateway: PCP, NAT-PMP and UPnP IGD behind one PortMapper. */
export { PortMapper, PORTMAP_DEFAULTS, PORTMAP_PROTOCOLS, DISCOVERY_BUDGET_MS } from './portmap/index.js';
export type { GatewayInfo, MapOptions, MappedTransport, MappingState, PortMapperEvent, PortMapperIo, GatewayProbe, MappingBackend, MapRequest, GrantedMapping, PortMapperOptions, PortMapping, PortMapProtocol } from './portmap/index.js';
export type { PortmapSettings } from './peer/portmap-agent.js';

export { formatEndpoint, parseHostPort, toHostPort } from './common/endpoint.js';
export type { HostPort } from './common/endpoint.js';
export type { TransportAddress } from './wire/types.js';
export type { Clock, TimerHandle } from './common/clock.js';

/** Keys, self-certifying URIs, the CA, identities and mutually authenticated TLS 1.3. */
export * from './security/index.js';

export { BrokerWorkers, startBrokerWorkers, WORKER_ENV } from './broker/workers/primary.js';
export type { BrokerWorkersOptions, WorkersEvent } from './broker/workers/primary.js';
export { WorkerConnection, shareLimits, workerIdentity } from './broker/workers/worker.js';
export type { WorkerIdentity } from './broker/workers/worker.js';
export type { RouteCounts, WorkerLink } from './broker/workers/worker-router.js';
export { WorkersStatusView, reportStatus } from './broker/workers/status-view.js';
