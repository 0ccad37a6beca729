/** The loader hooks of module-log.ts (they run on Node's loader thread): each loaded URL, one line to NATTRAV_MODULE_LOG. */
import { appendFileSync } from 'node:fs';

/** What Node passes to a load hook and expects back (the parts used here). */
interface LoadContext {
  readonly format?: string | null;
}
type NextLoad = (url: string, context: LoadContext) => Promise<unknown>;

/** Records `url`, then loads it as Node would. */
export async function load(url: string, context: LoadContext, nextLoad: NextLoad): Promise<unknown> {
  const file = process.env.NATTRAV_MODULE_LOG;
  if (file !== undefined && file !== '') appendFileSync(file, `${url}\n`);
  return nextLoad(url, context);
}
