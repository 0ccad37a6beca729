#!/usr/bin/env node
/**
 * The `nattrav` command. Thin: parses argv, calls the library, prints.
 * Progress and events go to stderr (human text, or JSON lines with --json);
 * stdout carries application data only. Exit codes: see output.ts / README.
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { brokerCommand, connectCommand, listenCommand } from './commands.js';
import { demoCommand } from './demo.js';
import { ExitCode, Reporter } from './output.js';

function positiveInteger(value: string): string {
  if (!/^\d+$/.test(value) || Number(value) <= 0) throw new InvalidArgumentError('expected a positive whole number of milliseconds');
  return value;
}

async function main(argv: string[]): Promise<number> {
  let result: Promise<number> = Promise.resolve(ExitCode.Ok);
  const program = new Command()
    .name('nattrav')
    .description('Direct TCP connections between peers behind NATs, through a connection broker.')
    .option('--json', 'report events as JSON lines on stderr')
    .exitOverride()
    .showHelpAfterError();
  const reporter = (): Reporter => new Reporter(program.opts<{ json?: boolean }>().json === true);
  const run = (fn: (out: Reporter) => Promise<number>): void => {
    const out = reporter();
    result = fn(out).catch((err: unknown) => out.error(err));
  };

  program
    .command('broker')
    .description('run a connection broker (UDP and TCP on one port)')
    .option('--listen <host:port>', 'address to listen on', '0.0.0.0:3478')
    .option('--json', 'report events as JSON lines on stderr')
    .action((options: { listen: string; json?: boolean }) => run((out) => brokerCommand(options, withJson(out, options.json))));

  program
    .command('listen')
    .description('register URI and accept connections (first one piped to stdin/stdout, like nc -l)')
    .argument('<uri>', 'the URI to register, e.g. nattrav://alice')
    .requiredOption('--broker <host:port>', 'the broker to register with')
    .option('--echo', 'echo every connection back instead of piping the first to stdio')
    .option('--json', 'report events as JSON lines on stderr')
    .action((uri: string, options: { broker: string; echo?: boolean; json?: boolean }) =>
      run((out) => listenCommand(uri, options, withJson(out, options.json))),
    );

  program
    .command('connect')
    .description('connect to URI and pipe stdin/stdout to the connection, like nc')
    .argument('<uri>', 'the URI to connect to')
    .requiredOption('--broker <host:port>', 'the broker to ask')
    .option('--timeout <ms>', 'give up after this many milliseconds', positiveInteger)
    .option('--json', 'report events as JSON lines on stderr')
    .action((uri: string, options: { broker: string; timeout?: string; json?: boolean }) =>
      run((out) => connectCommand(uri, options, withJson(out, options.json))),
    );

  program
    .command('demo')
    .description('two peers behind two NATs connect directly (network lab as root; loopback otherwise)')
    .option('--loopback', 'skip the network lab even when root')
    .option('--json', 'report events as JSON lines on stderr')
    .action((options: { loopback?: boolean; json?: boolean }) => run((out) => demoCommand(options, withJson(out, options.json))));

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? ExitCode.Ok : ExitCode.Usage;
    throw err;
  }
  return result;
}

function withJson(out: Reporter, json: boolean | undefined): Reporter {
  return json === true && !out.json ? new Reporter(true) : out;
}

main(process.argv).then(
  (code) => {
    process.exitCode = code;
    // Let stdout drain, then leave even if a handle (a keepalive timer) is still open.
    setTimeout(() => process.exit(code), 50).unref();
    if (process.stdout.writableLength === 0) process.stdout.end();
  },
  (err: unknown) => {
    process.stderr.write(`nattrav: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(ExitCode.Failure);
  },
);
