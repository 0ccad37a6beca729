/**
 * `nattrav ca`: a small CA for peer identities. Thin: parses, calls the
 * library (src/security), prints one result per command on stdout.
 *
 *   nattrav ca init DIR [--key-type T] [--name NAME] [--days N]     -> DIR/ca.pem, DIR/ca-key.pem
 *   nattrav ca issue --ca DIR --uri URI --out DIR [--key-type T] [--days N]
 *                                                                    -> OUT/cert.pem, OUT/key.pem, OUT/ca.pem
 *   nattrav ca show FILE                                             -> subject, URIs, validity, key type, fingerprint
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { ErrorCode, NattravError } from '../errors.js';
import { CA_DEFAULTS } from '../security/ca-defaults.js';
import { KEY_TYPES, type KeyType } from '../security/keys.js';
import type { CertificateInfo } from '../security/inspect.js';
import { ExitCode, type Reporter } from './output.js';
import { examples } from './help.js';

/** Runs a command with a reporter; main.ts's `run`. */
type Run = (fn: (out: Reporter) => Promise<number>) => void;
/** Switches a reporter to JSON when the subcommand got --json; main.ts's `withJson`. */
type WithJson = (out: Reporter, json: boolean | undefined) => Reporter;

/** Options of `nattrav ca init`. */
export interface CaInitOptions {
  keyType?: KeyType;
  name?: string;
  days?: string;
}

/** Options of `nattrav ca issue`. */
export interface CaIssueOptions {
  ca: string;
  uri: string;
  out: string;
  keyType?: KeyType;
  days?: string;
}

function keyType(value: string): KeyType {
  const found = KEY_TYPES.find((type) => type === value);
  if (found === undefined) throw new InvalidArgumentError(`expected one of ${KEY_TYPES.join(', ')}`);
  return found;
}

function positiveDays(value: string): string {
  if (!/^\d+$/.test(value) || Number(value) <= 0) throw new InvalidArgumentError('expected a positive whole number of days');
  return value;
}

/** The certificate functions, loaded when a `ca` command runs (the program defines `ca` at every start). */
function certificates(): Promise<typeof import('../security/index.js')> {
  return import('../security/index.js');
}

/** `nattrav ca init DIR`: creates a CA in DIR. */
export async function caInitCommand(dir: string, options: CaInitOptions, out: Reporter): Promise<number> {
  const { createCa, describeCertificate, writeCaDir } = await certificates();
  const files = await createCa({
    ...(options.name === undefined ? {} : { name: options.name }),
    ...(options.keyType === undefined ? {} : { keyType: options.keyType }),
    ...(options.days === undefined ? {} : { validDays: Number(options.days) }),
  });
  await writeCaDir(dir, files);
  const info = describeCertificate(files.certPem);
  out.result(
    'ca-created',
    { cert: join(dir, 'ca.pem'), key: join(dir, 'ca-key.pem'), subject: info.subject, keyType: info.keyType, fingerprint: info.fingerprint, notAfter: info.notAfter },
    `created CA "${info.subject}" (${String(info.keyType)}, valid until ${info.notAfter}) in ${dir}: ca.pem, ca-key.pem`,
  );
  return ExitCode.Ok;
}

/** `nattrav ca issue`: issues a certificate for URI, written with its key and the CA certificate to OUT. */
export async function caIssueCommand(options: CaIssueOptions, out: Reporter): Promise<number> {
  const { describeCertificate, issueCertificate, readCaDir, saveIdentity } = await certificates();
  const ca = await readCaDir(options.ca);
  const issued = await issueCertificate({
    ca,
    uri: options.uri,
    ...(options.keyType === undefined ? {} : { keyType: options.keyType }),
    ...(options.days === undefined ? {} : { validDays: Number(options.days) }),
  });
  await saveIdentity(options.out, { uri: options.uri, keyPem: issued.keyPem, certPem: issued.certPem, ca: [ca.certPem] });
  const info = describeCertificate(issued.certPem);
  out.result(
    'certificate-issued',
    { uri: options.uri, cert: join(options.out, 'cert.pem'), key: join(options.out, 'key.pem'), ca: join(options.out, 'ca.pem'), keyType: info.keyType, fingerprint: info.fingerprint, notAfter: info.notAfter },
    `issued a certificate for ${options.uri} (${String(info.keyType)}, valid until ${info.notAfter}) in ${options.out}: cert.pem, key.pem, ca.pem`,
  );
  return ExitCode.Ok;
}

/** `nattrav ca show FILE`: prints what a certificate says. */
export async function caShowCommand(file: string, out: Reporter): Promise<number> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new NattravError(ErrorCode.InvalidArgument, `could not read ${file}: ${(err as Error).message}`, { cause: err });
  }
  const info = (await certificates()).describeCertificate(text);
  out.result('certificate', { file, ...info }, humanLines(info).join('\n'));
  return ExitCode.Ok;
}

function humanLines(info: CertificateInfo): string[] {
  return [
    `subject: ${info.subject}`,
    `issuer: ${info.issuer}${info.selfIssued ? ' (self-issued)' : ''}`,
    `URI: ${info.uris.length === 0 ? '(none)' : info.uris.join(', ')}`,
    `valid: ${info.notBefore} to ${info.notAfter}`,
    `key: ${String(info.keyType)}, fingerprint ${info.fingerprint}${info.selfCertifyingUris.length > 0 ? ' (self-certifying URI)' : ''}`,
    `CA: ${info.isCa ? 'yes' : 'no'}`,
    `serial: ${info.serialNumber}`,
  ];
}

/** Adds `ca init|issue|show` to the program. */
export function addCaCommand(program: Command, run: Run, withJson: WithJson): void {
  const ca = program.command('ca').description('a small certificate authority for peer identities (TLS between peers)');
  ca.command('init')
    .description('create a CA: DIR/ca.pem and DIR/ca-key.pem (0600)')
    .argument('<dir>', 'directory for the CA (created; existing CA files are never overwritten)')
    .option('--key-type <type>', `key type: ${KEY_TYPES.join(' or ')}`, keyType)
    .option('--name <name>', `the CA's common name (default: ${CA_DEFAULTS.caName})`)
    .option('--days <n>', `validity in days (default: ${String(CA_DEFAULTS.caValidDays)})`, positiveDays)
    .option('--json', 'print the result as one JSON line (on stdout)')
    .action((dir: string, options: CaInitOptions & { json?: boolean }) => run((out) => caInitCommand(dir, options, withJson(out, options.json))))
    .addHelpText('after', examples(['nattrav ca init ./my-ca', 'nattrav ca init ./my-ca --key-type ed25519 --name "Home CA" --days 3650']));
  ca.command('issue')
    .description('issue a certificate for a URI: OUT/cert.pem, OUT/key.pem (0600), OUT/ca.pem')
    .requiredOption('--ca <dir>', '(required) the CA directory (from ca init)')
    .requiredOption('--uri <uri>', '(required) the URI the certificate names, e.g. nattrav://alice')
    .requiredOption('--out <dir>', '(required) directory for the identity (created; existing files are never overwritten)')
    .option('--key-type <type>', `key type: ${KEY_TYPES.join(' or ')}`, keyType)
    .option('--days <n>', `validity in days (default: ${String(CA_DEFAULTS.leafValidDays)})`, positiveDays)
    .option('--json', 'print the result as one JSON line (on stdout)')
    .action((options: CaIssueOptions & { json?: boolean }) => run((out) => caIssueCommand(options, withJson(out, options.json))))
    .addHelpText('after', examples(['nattrav ca issue --ca ./my-ca --uri nattrav://alice --out ./alice']));
  ca.command('show')
    .description('print a certificate: subject, URIs, validity, key type, fingerprint')
    .argument('<file>', 'a PEM certificate')
    .option('--json', 'print the result as one JSON line (on stdout)')
    .action((file: string, options: { json?: boolean }) => run((out) => caShowCommand(file, withJson(out, options.json))))
    .addHelpText('after', examples(['nattrav ca show ./alice/cert.pem', 'nattrav ca show ./my-ca/ca.pem --json']));
}
