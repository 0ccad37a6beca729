/**
 * nftables rulesets that make a Linux router namespace behave like a given kind of NAT.
 *
 * Every ruleset lives in one table, `ip nattrav`, and filters like a home router: the forward
 * chain drops by default, drops conntrack-invalid packets, lets replies (established/related)
 * and everything LAN -> WAN through, and the input chain drops unsolicited packets arriving on
 * the WAN. What differs between types is how mappings are made (postrouting / srcnat) and which
 * unsolicited inbound packets are steered to the LAN (prerouting / dstnat).
 *
 * The texts were checked with nftables 1.0.6 on Linux 6.18. nftables gotchas: `fwd` is a
 * reserved word, and every closing brace needs a newline or `;` before it.
 */
import { ErrorCode, NattravError } from '../errors.js';
import type { NatType } from './types.js';

/** Where a NAT ruleset applies. */
export interface NatRulesetOptions {
  /**
   * The WAN (public) interface.
   * @default 'wan0'
   */
  wan?: string;
  /**
   * The LAN (private) interface.
   * @default 'lan0'
   */
  lan?: string;
  /** The router's WAN IPv4 address (needed by `symmetric-sequential` and by hairpinning, which snat to it). */
  wanAddress: string;
  /**
   * Hairpinning (only full-cone, restricted-cone, port-restricted): a LAN host sending to
   * `wanAddress`:mapped port is dnat'ed to the internal endpoint that owns the mapping and
   * snat'ed to `wanAddress`, so the receiver sees the sender's public endpoint and replies
   * through the router.
   * @default false
   */
  hairpin?: boolean;
}

/** Options of {@link symmetricSequentialRuleset}. */
export interface SequentialRulesetOptions extends NatRulesetOptions {
  /**
   * The first public port handed out.
   * @default 20000
   */
  firstPort?: number;
  /**
   * How many ports are handed out before the counter wraps to `firstPort` again.
   * @default 1000
   */
  portCount?: number;
}

/** Name of the nftables table every NAT ruleset uses. */
export const NAT_TABLE = 'nattrav';

/**
 * How long a full-cone / restricted-cone mapping or permission survives without outbound
 * traffic: matches conntrack's UDP "stream" timeout (120 s), so the map never outlives
 * the flows that made it by much.
 */
const coneEntryTimeoutS = 120;

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

function interfaces(options: NatRulesetOptions): { wan: string; lan: string } {
  const wan = options.wan ?? 'wan0';
  const lan = options.lan ?? 'lan0';
  for (const [what, name] of [['wan', wan], ['lan', lan]] as const) {
    if (!IFNAME.test(name)) {
      throw new NattravError(ErrorCode.InvalidArgument, `${what} interface "${name}" is not a valid interface name; pass 1-15 characters of [A-Za-z0-9_.-]`);
    }
  }
  return { wan, lan };
}

/**
 * The filtering every type shares. `inboundDnat` adds the rule that forwards new inbound
 * connections the prerouting chain dnat'ed to the LAN (only cone types steer such traffic).
 */
function homeRouterFilter(wan: string, lan: string, inboundDnat: boolean, policy: ForwardPolicy = {}): string {
  const before = (policy.before ?? []).map((rule) => `\n    ${rule}`).join('');
  const outbound = policy.outbound ?? `iifname "${lan}" oifname "${wan}" accept`;
  return `
  # Unsolicited packets to the router itself from the WAN are dropped silently (no RST, no ICMP).
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "${wan}" ct state established,related accept
    iifname "${wan}" drop
  }

  # Forwarding: replies and LAN -> WAN pass${inboundDnat ? ', and new inbound flows the cone dnat chose' : ''}; nothing else.
  chain forward {
    type filter hook forward priority filter; policy drop;${before}
    ct state invalid drop
    ct state established,related accept
    ${outbound}${
      inboundDnat ? `\n    iifname "${wan}" oifname "${lan}" ct status dnat accept` : ''
    }${policy.hairpin === true ? `\n    iifname "${lan}" oifname "${lan}" ct status dnat accept` : ''}
  }
`;
}

/** What a type changes in the shared forward chain. */
interface ForwardPolicy {
  /** Rules before everything else (e.g. dropping all UDP). */
  before?: string[];
  /** The rule that lets new LAN -> WAN flows out. @default every flow */
  outbound?: string;
  /** Let hairpinned flows (LAN -> LAN through the router) through. */
  hairpin?: boolean;
}

/**
 * Port-restricted cone: `masquerade`.
 *
 * Mapping: endpoint-independent and port preserving (Linux keeps the source port when it is
 * free, so one internal endpoint keeps one public port for every destination).
 * Filtering: address-and-port-dependent: only packets of an existing conntrack entry (i.e. from
 * exactly the remote ip:port that was contacted) get in.
 */
export function portRestrictedRuleset(options: NatRulesetOptions): string {
  const { wan, lan } = interfaces(options);
  if (options.hairpin === true) {
    // Hairpinning needs to know which internal endpoint owns a public port: record mappings
    // like the cone types do, but steer nothing from the WAN.
    return `table ip ${NAT_TABLE} {${coneMapping(wan, false)}${hairpinChains(options, lan)}${homeRouterFilter(wan, lan, false, { hairpin: true })}}
`;
  }
  return `table ip ${NAT_TABLE} {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${wan}" masquerade
  }
${homeRouterFilter(wan, lan, false)}}
`;
}

/**
 * UDP blocked: a port-restricted NAT (masquerade) for TCP whose forward chain drops every UDP
 * packet, both ways. Models networks where UDP registration with the broker fails.
 */
export function udpBlockedRuleset(options: NatRulesetOptions): string {
  const { wan, lan } = interfaces(options);
  return `table ip ${NAT_TABLE} {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${wan}" masquerade
  }
${homeRouterFilter(wan, lan, false, { before: ['meta l4proto udp drop'] })}}
`;
}

/**
 * Web only: new flows may leave only as TCP to port 80 or 443 (masqueraded); UDP and every other
 * port are dropped. Models an HTTP-only corporate firewall.
 */
export function webOnlyRuleset(options: NatRulesetOptions): string {
  const { wan, lan } = interfaces(options);
  return `table ip ${NAT_TABLE} {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${wan}" masquerade
  }
${homeRouterFilter(wan, lan, false, { before: ['meta l4proto udp drop'], outbound: `iifname "${lan}" oifname "${wan}" tcp dport { 80, 443 } accept` })}}
`;
}

/** The hairpinning chains (see {@link NatRulesetOptions.hairpin}); they need the `cone_*` maps. */
function hairpinChains(options: NatRulesetOptions, lan: string): string {
  if (!IPV4.test(options.wanAddress)) {
    throw new NattravError(ErrorCode.InvalidArgument, `wanAddress "${options.wanAddress}" is not an IPv4 address; hairpinning needs the router's WAN address`);
  }
  const address = options.wanAddress;
  return `

  # Hairpinning: LAN -> our own public address : a mapped port goes back into the LAN ...
  chain hairpin_dnat {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "${lan}" ip daddr ${address} dnat ip to udp dport map @cone_udp
    iifname "${lan}" ip daddr ${address} dnat ip to tcp dport map @cone_tcp
  }

  # ... from the sender's public endpoint, so replies come back through the router.
  chain hairpin_snat {
    type nat hook postrouting priority srcnat - 10; policy accept;
    iifname "${lan}" oifname "${lan}" ct status dnat snat ip to ${address}
  }
`;
}

/**
 * Symmetric with random ports: `masquerade fully-random`.
 *
 * Mapping: address-and-port-dependent: every new flow (new remote ip:port) gets a random public
 * port, so what a STUN server sees is useless to any other peer.
 * Filtering: address-and-port-dependent (conntrack only).
 */
export function symmetricRuleset(options: NatRulesetOptions): string {
  const { wan, lan } = interfaces(options);
  return `table ip ${NAT_TABLE} {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${wan}" masquerade fully-random
  }
${homeRouterFilter(wan, lan, false)}}
`;
}

/**
 * Symmetric with sequential ports: each new TCP or UDP flow is snat'ed to the next port of
 * `firstPort .. firstPort + portCount - 1` (`numgen inc` walks a map of ports), so the next
 * mapping is predictable from the last one. The counter is shared by every flow through the
 * router, TCP and UDP alike; other protocols are masqueraded.
 *
 * Mapping: address-and-port-dependent, strictly sequential. Filtering: conntrack only.
 */
export function symmetricSequentialRuleset(options: SequentialRulesetOptions): string {
  const { wan, lan } = interfaces(options);
  if (!IPV4.test(options.wanAddress)) {
    throw new NattravError(ErrorCode.InvalidArgument, `wanAddress "${options.wanAddress}" is not an IPv4 address; pass the router's WAN address`);
  }
  const firstPort = options.firstPort ?? 20_000;
  const portCount = options.portCount ?? 1000;
  if (!Number.isInteger(portCount) || portCount < 2 || portCount > 10_000) {
    throw new NattravError(ErrorCode.InvalidArgument, `portCount ${portCount} is out of range; pass an integer in 2..10000`);
  }
  if (!Number.isInteger(firstPort) || firstPort < 1024 || firstPort + portCount - 1 > 65_535) {
    throw new NattravError(ErrorCode.InvalidArgument, `firstPort ${firstPort} with portCount ${portCount} leaves 1024..65535; pass a smaller firstPort`);
  }
  const ports = Array.from({ length: portCount }, (_, i) => `${i} : ${firstPort + i}`).join(', ');
  return `table ip ${NAT_TABLE} {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${wan}" meta l4proto { tcp, udp } snat ip to ${options.wanAddress} : numgen inc mod ${portCount} map { ${ports} }
    oifname "${wan}" masquerade
  }
${homeRouterFilter(wan, lan, false)}}
`;
}

/**
 * The shared part of the cone types: masquerade, then record each outbound mapping
 * (public port -> internal ip . port, per protocol) in dynamic maps from a postrouting chain
 * that runs after srcnat (where the packet already carries its public source port).
 * `ct direction original` keeps replies of inbound flows from overwriting entries.
 */
function coneMapping(wan: string, restricted: boolean): string {
  const map = (name: string): string => `
  map ${name} {
    type inet_service : ipv4_addr . inet_service
    flags dynamic,timeout
    timeout ${coneEntryTimeoutS}s
  }`;
  const set = (name: string): string => `
  set ${name} {
    type inet_service . ipv4_addr
    flags dynamic,timeout
    timeout ${coneEntryTimeoutS}s
  }`;
  const record = (proto: 'udp' | 'tcp'): string =>
    `    oifname "${wan}" ct direction original update @cone_${proto} { ${proto} sport : ct original ip saddr . ct original proto-src }` +
    (restricted ? `\n    oifname "${wan}" ct direction original update @allow_${proto} { ${proto} sport . ip daddr }` : '');
  return `${map('cone_udp')}${map('cone_tcp')}${restricted ? `${set('allow_udp')}${set('allow_tcp')}` : ''}

  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${wan}" masquerade
  }

  chain record_mapping {
    type filter hook postrouting priority srcnat + 10; policy accept;
${record('udp')}
${record('tcp')}
  }
`;
}

/**
 * Full cone: endpoint-independent mapping (masquerade, recorded per public port) and
 * endpoint-independent filtering: a new inbound TCP or UDP packet from anyone to a recorded
 * public port is dnat'ed to the internal endpoint that owns it.
 */
export function fullConeRuleset(options: NatRulesetOptions): string {
  const { wan, lan } = interfaces(options);
  const hairpin = options.hairpin === true;
  return `table ip ${NAT_TABLE} {${coneMapping(wan, false)}${hairpin ? hairpinChains(options, lan) : ''}
  # Anyone may reach a mapped port.
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "${wan}" dnat ip to udp dport map @cone_udp
    iifname "${wan}" dnat ip to tcp dport map @cone_tcp
  }
${homeRouterFilter(wan, lan, true, { hairpin })}}
`;
}

/**
 * Restricted cone: endpoint-independent mapping and address-dependent filtering: a new inbound
 * packet to a mapped port is dnat'ed to its internal endpoint only when that endpoint has sent
 * to the packet's source address (from any port; the `allow_*` sets are keyed on
 * public port . remote address).
 */
export function restrictedConeRuleset(options: NatRulesetOptions): string {
  const { wan, lan } = interfaces(options);
  const hairpin = options.hairpin === true;
  return `table ip ${NAT_TABLE} {${coneMapping(wan, true)}${hairpin ? hairpinChains(options, lan) : ''}
  # Only addresses the internal endpoint contacted may reach its mapped port (from any port).
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "${wan}" udp dport . ip saddr @allow_udp dnat ip to udp dport map @cone_udp
    iifname "${wan}" tcp dport . ip saddr @allow_tcp dnat ip to tcp dport map @cone_tcp
  }
${homeRouterFilter(wan, lan, true, { hairpin })}}
`;
}

/** The ruleset for `nat` (every type but `none`, which has no router). */
export function natRuleset(nat: Exclude<NatType, 'none'>, options: NatRulesetOptions): string {
  switch (nat) {
    case 'full-cone':
      return fullConeRuleset(options);
    case 'restricted-cone':
      return restrictedConeRuleset(options);
    case 'port-restricted':
      return portRestrictedRuleset(options);
    case 'symmetric':
      return symmetricRuleset(options);
    case 'symmetric-sequential':
      return symmetricSequentialRuleset(options);
    case 'udp-blocked':
      return udpBlockedRuleset(options);
    case 'web-only':
      return webOnlyRuleset(options);
    default: {
      const never: never = nat;
      throw new NattravError(ErrorCode.InvalidArgument, `unknown NAT type ${String(never)}`);
    }
  }
}
