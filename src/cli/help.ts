/** Help text shared by the commands. */

/** An "Examples:" block for a command's --help. */
export function examples(lines: readonly string[]): string {
  return `\nExamples:\n${lines.map((line) => `  $ ${line}`).join('\n')}\n`;
}
