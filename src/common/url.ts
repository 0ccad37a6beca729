/** Printing URLs that may carry a password (`redis://user:PASSWORD@host`, `user:PASSWORD@host:port`). */

/**
 * `url` with the password of its userinfo replaced by `***`: everything between the
 * first `:` after the scheme's `//` and the last `@`, so a password holding `/`, `@` or
 * `:` (unencoded, as generated passwords often are) is masked whole, whether the URL
 * parses or not; without a scheme (`USER:PASS@HOST:PORT`, as --socks5 takes it) from the
 * first `:`. A URL without `@` is returned as it is.
 */
export function maskUrlPassword(url: string): string {
  const match = /^([a-z][a-z0-9+.-]*:\/\/)?([^]*)@/i.exec(url);
  if (match === null) return url;
  const userinfo = match[2] as string;
  const colon = userinfo.indexOf(':');
  const user = colon === -1 ? userinfo : userinfo.slice(0, colon);
  return `${match[1] ?? ''}${colon === -1 ? user : `${user}:***`}@${url.slice(match[0].length)}`;
}
