/**
 * Text as characters as shown: a flag or a family emoji is one character of several code points.
 * Where the browser cannot tell (before Firefox 125), code points.
 */
export function characters(text: string): string[] {
  if ('Segmenter' in Intl) return Array.from(new Intl.Segmenter().segment(text), (part) => part.segment);
  return Array.from(text);
}

/** The server's limit on a conversation title, in code points. */
export const MAX_TITLE_CODE_POINTS = 200;

export function codePoints(text: string): number {
  return Array.from(text).length;
}

/** The longest start of `text`, in whole characters, of at most `limit` code points. */
export function cutToCodePoints(text: string, limit: number): string {
  let cut = '';
  for (const character of characters(text)) {
    if (codePoints(cut + character) > limit) break;
    cut += character;
  }
  return cut;
}
