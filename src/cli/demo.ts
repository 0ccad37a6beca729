/** `nattrav demo`: prints each step of the library's demo (progress, stderr) and its result (stdout). */
import { runDemo } from '../lab/index.js';
import { ExitCode, type Reporter } from './output.js';

/** Runs the demo and prints its steps and result. */
export async function demoCommand(options: { loopback?: boolean }, out: Reporter): Promise<number> {
  const result = await runDemo({
    mode: options.loopback === true ? 'loopback' : 'auto',
    onStep: (step) => out.event('step', { step: step.step, text: step.text, ...(step.detail ?? {}) }, `[${step.step}] ${step.text}`),
  });
  out.result('result', { ...result }, `result: ${result.mode} demo, path ${result.path}, setup ${result.setupMs} ms${result.skipped ? ` (lab skipped: ${result.skipped})` : ''}`);
  return ExitCode.Ok;
}
