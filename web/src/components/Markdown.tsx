import type { Element } from 'hast';
import { type ComponentPropsWithoutRef, type MouseEvent, createContext, memo, useContext, useDeferredValue, useId, useMemo, useRef } from 'react';
import ReactMarkdown, { type Components } from 'react-markdown';
import remarkGfm from 'remark-gfm';
import { CopyButton } from './CopyButton';
import { rehypeHighlightLite } from './highlight';

/**
 * Raw HTML in a message is shown as the text the user typed. Without rehype-raw react-markdown
 * would drop it silently; turning `html` nodes into `text` keeps `<script>` visible and inert.
 */
function remarkHtmlAsText() {
  return (tree: MdNode) => {
    const visit = (node: MdNode) => {
      if (node.type === 'html') node.type = 'text';
      node.children?.forEach(visit);
    };
    visit(tree);
  };
}
interface MdNode {
  type: string;
  value?: string;
  children?: MdNode[];
}

/** The blocks of a message that take their direction from their own words. */
const DIRECTED = new Set(['p', 'ul', 'ol', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'blockquote', 'table']);

/**
 * Each block of a message reads in its own direction (`dir="auto"`: from its first strong
 * character), so Arabic or Hebrew sits at the right with its punctuation, bullets and first
 * column where they belong, in a message that may mix languages. Only the message's own blocks
 * get it: a list, quote or table takes one direction from its first words, and what is inside
 * follows it (an element with a `dir` of its own would be left out when its parent looks for
 * those words). A code block is left to right wherever it is (`Pre`).
 */
function rehypeOwnDirection() {
  return (tree: HastNode) => {
    for (const node of tree.children ?? []) {
      if (node.type === 'element' && node.tagName !== undefined && DIRECTED.has(node.tagName)) {
        node.properties = { ...node.properties, dir: 'auto' };
      }
    }
  };
}
interface HastNode {
  type: string;
  tagName?: string;
  properties?: Record<string, unknown>;
  children?: HastNode[];
}

/** Set inside a link: a link within it (an image, shown as one) would be a link in a link. */
const InLink = createContext(false);

function Link(props: ComponentPropsWithoutRef<'a'> & { node?: unknown }) {
  const { node: _node, children, ...rest } = props;
  const nested = useContext(InLink);
  // An unsafe address (javascript:, data:) comes without one: an empty href would open this page.
  if (!rest.href || nested) return <span>{children}</span>;
  if (rest.href.startsWith('#')) {
    return (
      <a {...rest} onClick={goWithinThePage}>
        {children}
      </a>
    );
  }
  return (
    <a {...rest} target="_blank" rel="noopener noreferrer">
      <InLink.Provider value={true}>{children}</InLink.Provider>
    </a>
  );
}

/**
 * A link to a place in the message (a footnote and its way back) goes there without touching the
 * address: the page's own route lives in its hash, and a new tab would open the chat again.
 */
function goWithinThePage(event: MouseEvent<HTMLAnchorElement>) {
  event.preventDefault();
  const id = decodeURIComponent(event.currentTarget.getAttribute('href')?.slice(1) ?? '');
  const target = document.getElementById(id);
  if (!target) return;
  target.scrollIntoView({ block: 'center' });
  (target instanceof HTMLAnchorElement ? target : target.querySelector('a'))?.focus({ preventScroll: true });
}

/**
 * An image is a link to it, not fetched: reading a message must not make requests of its own (an
 * image naming this server's own routes would open event streams, or send anything a GET does),
 * and the page's policy blocks images of other sites anyway.
 */
function Image(props: ComponentPropsWithoutRef<'img'> & { node?: unknown; tabIndex?: number }) {
  const { src, alt, tabIndex } = props;
  const named = alt || (typeof src === 'string' ? src : '');
  const label = named ? `Image: ${named}` : 'Image';
  return (
    <Link href={typeof src === 'string' ? src : undefined} tabIndex={tabIndex}>
      {label}
    </Link>
  );
}

/**
 * Code blocks and tables scroll sideways when wider than the message; a region that scrolls must
 * be reachable by keyboard, so it takes focus (arrow keys then scroll it). A code block has a bar
 * above it with its language, if named, and a button that copies its code alone.
 */
function Pre(props: ComponentPropsWithoutRef<'pre'> & { node?: Element }) {
  const { node, ...rest } = props;
  const pre = useRef<HTMLPreElement>(null);
  const language = node && languageOf(node);
  return (
    <div className="code-block" dir="ltr">
      <div className="code-header">
        <span className="code-language">{language}</span>
        {/* Without the line break that ends every code block: pasted, it would add an empty line. */}
        <CopyButton text={() => (pre.current?.textContent ?? '').replace(/\n$/, '')} label="Copy code" className="code-copy" />
      </div>
      <pre ref={pre} tabIndex={0} dir="ltr" {...rest} />
    </div>
  );
}

/** The language a fenced code block names (its `code` element's `language-…` class), if any. */
function languageOf(pre: Element): string | undefined {
  const code = pre.children.find((child): child is Element => child.type === 'element' && child.tagName === 'code');
  const classes = code?.properties.className;
  const named = Array.isArray(classes) ? classes.find((c): c is string => typeof c === 'string' && c.startsWith('language-')) : undefined;
  return named?.slice('language-'.length);
}

function Table(props: ComponentPropsWithoutRef<'table'> & { node?: unknown }) {
  const { node: _node, ...rest } = props;
  return <table tabIndex={0} {...rest} />;
}

/**
 * A message's headings rank one level below the page's own `h1` (the conversation's title), so
 * that moving by heading, a reply's `# Title` does not read as a second title of the page
 * (`#####` and `######` are both an `h6`, the lowest there is).
 */
const headingsBelowThePage: Components = {
  h1: ({ node: _node, ...rest }) => <h2 {...rest} />,
  h2: ({ node: _node, ...rest }) => <h3 {...rest} />,
  h3: ({ node: _node, ...rest }) => <h4 {...rest} />,
  h4: ({ node: _node, ...rest }) => <h5 {...rest} />,
  h5: ({ node: _node, ...rest }) => <h6 {...rest} />,
};

const components: Components = { ...headingsBelowThePage, a: Link, img: Image, pre: Pre, table: Table };

/**
 * For a copy that is read out, never visited: nothing in it takes focus. Code blocks and tables
 * say so with `tabIndex={-1}`: in the hidden copy's 1-pixel box they overflow, and Chromium makes
 * an element that scrolls, without a `tabindex`, a stop of the Tab key that nobody can see.
 */
const unfocusable: Components = {
  ...headingsBelowThePage,
  a: (props) => <Link {...props} tabIndex={-1} />,
  img: (props) => <Image {...props} tabIndex={-1} />,
  pre: ({ node: _node, ...rest }) => <pre dir="ltr" {...rest} tabIndex={-1} />,
  table: ({ node: _node, ...rest }) => <table {...rest} tabIndex={-1} />,
};

const remarkPlugins = [remarkGfm, remarkHtmlAsText];
const rehypePlugins = [rehypeHighlightLite, rehypeOwnDirection];

/**
 * Memoised on its string and flag (the plugins and components are created once, above): a block of
 * a streamed reply that is complete is not parsed again for every piece.
 */
const Blocks = memo(function Blocks({ text, focusable, idPrefix }: { text: string; focusable: boolean; idPrefix: string }) {
  return (
    <ReactMarkdown
      remarkPlugins={remarkPlugins}
      rehypePlugins={rehypePlugins}
      remarkRehypeOptions={{ clobberPrefix: idPrefix }}
      components={focusable ? components : unfocusable}
    >
      {text}
    </ReactMarkdown>
  );
});

/**
 * Message text as safe markdown with GitHub's extensions (tables, strikethrough, task lists, bare
 * links), as models write it: no raw HTML, safe URLs only (react-markdown's default).
 * `focusable={false}` leaves links, code blocks and tables out of the tab order.
 */
export function Markdown({ text, focusable = true }: { text: string; focusable?: boolean }) {
  const idPrefix = useIdPrefix();
  return (
    <div className="markdown">
      <Blocks text={text} focusable={focusable} idPrefix={idPrefix} />
    </div>
  );
}

/** Ids of a message's own (footnotes and their calls), not shared with any other message's. */
function useIdPrefix(): string {
  return `m${useId().replace(/[^\w-]/g, '')}-`;
}

/**
 * A reply as it streams in. Parsing the whole text again for every piece costs time that grows with
 * the reply, so a long one kept the page busy for nearly all of its streaming (a reply of 24,000
 * characters: 11.4 s of the main thread's 11.6 s). The text is cut where a block is surely over:
 * the blocks before the cut are parsed once, only the last one again. Once stored, the message is
 * shown whole by `Markdown`; until then, definitions of reference links and footnotes apply only
 * within their block.
 */
export function StreamingMarkdown({ text }: { text: string }) {
  // Behind typing and clicks: a last block without a blank line to cut at (one long code block or
  // list) is still parsed whole, and pieces that come while it is parsed are taken together.
  const shown = useDeferredValue(text);
  const blocks = useMemo(() => settledBlocks(shown), [shown]);
  const idPrefix = useIdPrefix();
  return (
    <div className="markdown">
      {blocks.map((block, index) => (
        <Blocks key={index} text={block} focusable={true} idPrefix={idPrefix} />
      ))}
    </div>
  );
}

const FENCE_OPENING = /^ {0,3}(`{3,}|~{3,})/;
const FENCE_CLOSING = /^ {0,3}(`{3,}|~{3,})[ \t]*$/;
const FENCE_ANYWHERE = /`{3,}|~{3,}/;
/** HTML blocks that, unlike the others, run across blank lines until their end marker. */
const HTML_ACROSS_BLANK_LINES = /^ {0,3}<(?:(?:pre|script|style|textarea)(?:[\s>]|$)|!--|\?|![A-Za-z]|!\[CDATA\[)/i;
const BLANK = /^[ \t]*$/;
const LIST_ITEM = /^(?:[-*+]|\d{1,9}[.)])(?:\s|$)/;

/**
 * `text` cut at the blank lines after which a new top-level block surely begins: outside a fenced
 * code block, before a line that starts at the margin and is not a list item (a loose list's next
 * item, or an indented paragraph of the item before, stays with its list). Past a fence this cannot
 * follow (one in a list item or a quote) or HTML that runs across blank lines, it cuts no more: a
 * wrong cut would show code as text, or text as code, until the reply is stored.
 */
export function settledBlocks(text: string): string[] {
  const lines = text.split('\n');
  const blocks: string[] = [];
  let start = 0;
  let fence: string | null = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (fence !== null) {
      const closing = FENCE_CLOSING.exec(line)?.[1];
      if (closing && closing[0] === fence[0] && closing.length >= fence.length) fence = null;
      continue;
    }
    const opening = FENCE_OPENING.exec(line)?.[1];
    if (opening) {
      fence = opening;
      continue;
    }
    if (FENCE_ANYWHERE.test(line) || HTML_ACROSS_BLANK_LINES.test(line)) break;
    const next = lines[i + 1];
    const startsBlock = next !== undefined && /^\S/.test(next) && !LIST_ITEM.test(next);
    if (BLANK.test(line) && i > start && startsBlock) {
      blocks.push(lines.slice(start, i).join('\n'));
      start = i + 1;
    }
  }
  blocks.push(lines.slice(start).join('\n'));
  return blocks;
}
