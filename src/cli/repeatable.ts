/** Repeatable options (`--limit`, `--allow`, ...): one parser, which the config file recognises. */

/** Collects a repeatable option's values (commander's argParser): the config file may give them as a list. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}
