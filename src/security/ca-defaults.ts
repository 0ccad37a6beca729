/**
 * Defaults of the CA functions (ca.ts), in a module of their own: `nattrav ca --help`
 * shows them without loading the certificate library ca.ts needs.
 */

/** Defaults of the functions in ca.ts. */
export const CA_DEFAULTS = {
  caName: 'nattrav CA',
  caValidDays: 3650,
  leafValidDays: 365,
} as const;
