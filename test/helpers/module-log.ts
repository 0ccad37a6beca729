/**
 * `node --import dist/test/helpers/module-log.js ...`: writes the URL of every module the
 * process loads through the ES module loader (ours, and each package's entry) to the file
 * named by NATTRAV_MODULE_LOG, one per line. The CLI start test reads it to see what a
 * command loaded. A loader hook (module.register), not a patch of Node's internals.
 */
import { register } from 'node:module';

register('./module-log-hooks.js', import.meta.url);
