// Which pipeline a series belongs to: globs over the metric name and the device id.

/** `*` matches any run of characters (`/` included: device ids may contain it), `?` one character. */
export function compileGlob(glob: string): (name: string) => boolean {
  if (!/[*?]/.test(glob)) return (name) => name === glob;
  const source = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  const re = new RegExp(`^${source}$`, 's');
  return (name) => re.test(name);
}
