import type { Element, ElementContent, Root, RootContent } from 'hast';
import { createLowlight } from 'lowlight';
import bash from 'highlight.js/lib/languages/bash';
import css from 'highlight.js/lib/languages/css';
import javascript from 'highlight.js/lib/languages/javascript';
import json from 'highlight.js/lib/languages/json';
import python from 'highlight.js/lib/languages/python';
import rust from 'highlight.js/lib/languages/rust';
import sql from 'highlight.js/lib/languages/sql';
import typescript from 'highlight.js/lib/languages/typescript';
import xml from 'highlight.js/lib/languages/xml';

// A handful of grammars keeps the bundle small (rehype-highlight would pull in ~40 by default);
// code in other languages is shown unhighlighted.
const lowlight = createLowlight({ bash, css, javascript, json, python, rust, sql, typescript, xml });
lowlight.registerAlias({
  bash: ['sh', 'shell', 'zsh', 'console'],
  javascript: ['js', 'jsx', 'mjs'],
  typescript: ['ts', 'tsx'],
  xml: ['html', 'svg'],
  python: ['py'],
  rust: ['rs'],
});

/**
 * Rehype plugin: highlights `<pre><code class="language-x">` blocks by replacing the text with
 * highlight.js token elements (as hast nodes: no HTML strings are ever parsed or injected).
 */
export function rehypeHighlightLite() {
  return (tree: Root) => {
    const visit = (node: Root | RootContent, parent: Element | Root | null) => {
      if (node.type === 'element' && node.tagName === 'code' && parent?.type === 'element' && parent.tagName === 'pre') {
        highlightCode(node);
        return;
      }
      if ('children' in node) for (const child of node.children) visit(child, node.type === 'element' || node.type === 'root' ? node : null);
    };
    visit(tree, null);
  };
}

function highlightCode(code: Element): void {
  const classes = code.properties.className;
  const list = Array.isArray(classes) ? classes.map(String) : [];
  const lang = list.find((c) => c.startsWith('language-'))?.slice('language-'.length);
  if (!lang || !lowlight.registered(lang)) return;
  const text = code.children.map((c) => (c.type === 'text' ? c.value : '')).join('');
  const result = lowlight.highlight(lang, text);
  code.properties.className = [...list, 'hljs'];
  code.children = result.children as ElementContent[];
}
