import type { ComponentPropsWithoutRef } from 'react';
import ReactMarkdown, { type Components } from 'react-markdown';
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

function Link(props: ComponentPropsWithoutRef<'a'> & { node?: unknown }) {
  const { node: _node, children, ...rest } = props;
  return (
    <a {...rest} target="_blank" rel="noopener noreferrer">
      {children}
    </a>
  );
}

const components: Components = { a: Link };

/** Message text as safe markdown: no raw HTML, safe URLs only (react-markdown's default). */
export function Markdown({ text }: { text: string }) {
  return (
    <div className="markdown">
      <ReactMarkdown remarkPlugins={[remarkHtmlAsText]} rehypePlugins={[rehypeHighlightLite]} components={components}>
        {text}
      </ReactMarkdown>
    </div>
  );
}
