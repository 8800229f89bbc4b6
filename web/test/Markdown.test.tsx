import { fireEvent, render } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import { Markdown, StreamingMarkdown, settledBlocks } from '../src/components/Markdown';

describe('Markdown', () => {
  it('shows raw HTML as text and never creates script elements', () => {
    const alert = vi.spyOn(window, 'alert').mockImplementation(() => undefined);
    const { container } = render(<Markdown text={'Hello <script>alert(1)</script> and <img src=x onerror="alert(2)">'} />);
    expect(container.querySelector('script')).toBeNull();
    expect(container.querySelector('img')).toBeNull();
    expect(container.textContent).toContain('<script>alert(1)</script>');
    expect(container.textContent).toContain('<img src=x onerror="alert(2)">');
    expect(alert).not.toHaveBeenCalled();
  });

  it('shows a block of raw HTML as text too', () => {
    const { container } = render(<Markdown text={'<div onclick="x()">\n<script>alert(1)</script>\n</div>'} />);
    expect(container.querySelector('div[onclick]')).toBeNull();
    expect(container.querySelector('script')).toBeNull();
    expect(container.textContent).toContain('<script>alert(1)</script>');
  });

  it('lets each block of a message take the direction of its own words, and code keep left to right', () => {
    const text = 'مرحبا بالعالم.\n\n- البند الأول.\n- Second item\n\n> שלום\n\n| a |\n| - |\n| ب |\n\n```\ncode\n```';
    const { container } = render(<Markdown text={text} />);
    const blocks = [...(container.querySelector('.markdown')?.children ?? [])];
    expect(blocks.map((block) => [block.tagName, block.getAttribute('dir')])).toEqual([
      ['P', 'auto'],
      ['UL', 'auto'],
      ['BLOCKQUOTE', 'auto'],
      ['TABLE', 'auto'],
      ['DIV', 'ltr'],
    ]);
    expect(container.querySelector('.code-block > pre')?.getAttribute('dir')).toBe('ltr');
    // What is inside a list, quote or table follows it: with a direction of its own, it would be
    // left out when the browser looks for the block's first words, and the block would stay
    // left to right.
    expect(container.querySelectorAll('li[dir], blockquote p[dir], td[dir], th[dir]')).toHaveLength(0);
    expect(container.querySelector('code')?.hasAttribute('dir')).toBe(false);
    // A code block stays left to right inside a right-to-left list item too.
    const nested = render(<Markdown text={'- البند:\n\n  ```\n  let x = 1;\n  ```'} />).container;
    expect(nested.querySelector('ul')?.getAttribute('dir')).toBe('auto');
    expect(nested.querySelector('li pre')?.getAttribute('dir')).toBe('ltr');
  });

  it('gives a code block a bar with its language and a button that copies its code alone', async () => {
    const writeText = vi.fn(() => Promise.resolve());
    vi.stubGlobal('navigator', { ...navigator, clipboard: { writeText } });
    try {
      const text = 'Run this:\n\n```rust\nfn main() {\n    println!("hi");\n}\n```\n\nand then:\n\n```\nplain\n```';
      const { container, getAllByRole, findByText } = render(<Markdown text={text} />);
      const languages = [...container.querySelectorAll('.code-language')].map((label) => label.textContent);
      expect(languages).toEqual(['rust', '']);
      const copies = getAllByRole('button', { name: 'Copy code' });
      expect(copies).toHaveLength(2);
      fireEvent.click(copies[0] as HTMLElement);
      await findByText('Copied');
      expect(writeText).toHaveBeenCalledWith('fn main() {\n    println!("hi");\n}');
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it('opens links in a new tab without giving the page access to the opener', () => {
    const { getByRole } = render(<Markdown text="See [the docs](https://example.com/docs)." />);
    const link = getByRole('link', { name: 'the docs' });
    expect(link.getAttribute('href')).toBe('https://example.com/docs');
    expect(link.getAttribute('target')).toBe('_blank');
    expect(link.getAttribute('rel')).toBe('noopener noreferrer');
  });

  it('a copy that is only read out takes no focus: links, code blocks and tables stay out of the tab order', () => {
    const text = 'See [the docs](https://example.com).\n\n```\ncode\n```\n\n| a |\n| - |\n| 1 |';
    const shown = render(<Markdown text={text} />).container;
    expect(shown.querySelectorAll('pre[tabindex="0"], table[tabindex="0"]')).toHaveLength(2);
    const readOut = render(<Markdown text={text} focusable={false} />).container;
    expect(readOut.querySelector('a')?.getAttribute('tabindex')).toBe('-1');
    expect(readOut.querySelector('a')?.getAttribute('href')).toBe('https://example.com');
    expect(readOut.querySelectorAll('[tabindex]:not([tabindex="-1"])')).toHaveLength(0);
    // Said outright: without a tabindex, Chromium makes a code block or table that overflows the
    // hidden copy's box a Tab stop of its own.
    expect(readOut.querySelectorAll('pre[tabindex="-1"], table[tabindex="-1"]')).toHaveLength(2);
    // The same words, without the code block's bar (its language and Copy button are controls).
    expect(readOut.querySelector('.code-header')).toBeNull();
    shown.querySelectorAll('.code-header').forEach((header) => header.remove());
    expect(readOut.textContent).toBe(shown.textContent);
  });

  it('cuts a streamed reply only where a new block surely begins', () => {
    expect(settledBlocks('One.\n\nTwo.\n\n# Three')).toEqual(['One.', 'Two.', '# Three']);
    // A blank line in a fenced code block, between a loose list's items or before an item's own
    // indented paragraph keeps its block together.
    const fenced = '```\na\n\nb\n```\n\nAfter.';
    expect(settledBlocks(fenced)).toEqual(['```\na\n\nb\n```', 'After.']);
    const loose = '1. First\n\n   More of the first.\n\n2. Second\n\nDone.';
    expect(settledBlocks(loose)).toEqual(['1. First\n\n   More of the first.\n\n2. Second', 'Done.']);
    expect(settledBlocks('~~~~\n```\n\n~~~~\n\nx')).toEqual(['~~~~\n```\n\n~~~~', 'x']);
    expect(settledBlocks('')).toEqual(['']);
  });

  it('shows every part of a streamed reply as the same text would be shown whole', () => {
    const tricky = [
      '```\na\n\n# not a heading\n```\n\nAfter.',
      '````\n```\n\n# inside\n````\n\n~~~py\nx\n\ny\n~~~\n\nEnd.',
      '```js\nconst a = 1;\n```py\n\n# still code\n```\n\nOut.',
      '- ```sh\n  npm i\n  ```\n\nThen:\n\n```py\nx = 1\n\n# comment\ny = 2\n```\n\nDone.',
      '> ```\n> a\n\n# b\n\nc',
      '<pre>\na\n\n# b\n</pre>\n\nAfter',
      '<!-- note\n\n# hidden\n-->\n\nx',
      'Para\n\u00a0\nNext',
      '1. First\n\n   More of the first.\n\n2. Second\n   - nested\n\n     nested more\n\nDone.',
      '- a\n\n- b\n\n\tcode or item?\n\nText',
      '> quoted\n\n> again\n\nTitle\n=====\n\nPara\n\n    indented code\n\nEnd',
      '| a | b |\n| - | - |\n| 1 | 2 |\n\nAfter the table.',
    ];
    const html = (container: HTMLElement) => container.innerHTML.replace(/>\n</g, '><');
    for (const text of tricky) {
      const lines = text.split('\n');
      for (let end = 1; end <= lines.length; end++) {
        const part = lines.slice(0, end).join('\n');
        const whole = render(<Markdown text={part} />);
        const streamed = render(<StreamingMarkdown text={part} />);
        expect(html(streamed.container), JSON.stringify(part)).toBe(html(whole.container));
        whole.unmount();
        streamed.unmount();
      }
    }
  });

  it('shows a streamed reply as the stored one will be shown', () => {
    const text = [
      '# Plan',
      '',
      'Some **bold** prose and a [link](https://example.com).',
      '',
      '1. First',
      '',
      '   Its own paragraph.',
      '',
      '2. Second',
      '',
      '```js',
      'const a = 1;',
      '',
      'const b = 2;',
      '```',
      '',
      '| a | b |',
      '| - | - |',
      '| 1 | 2 |',
    ].join('\n');
    // The same elements; only the line breaks between top-level blocks, which show nothing, differ.
    const html = (container: HTMLElement) => container.innerHTML.replace(/>\n</g, '><');
    const whole = html(render(<Markdown text={text} />).container);
    expect(html(render(<StreamingMarkdown text={text} />).container)).toBe(whole);
  });

  it('gives each message footnotes of its own, reached without leaving the chat', () => {
    const text = 'A claim.[^1]\n\n[^1]: The source.';
    const first = render(<Markdown text={text} />).container;
    const second = render(<Markdown text={text} />).container;
    const call = (container: HTMLElement) => container.querySelector<HTMLAnchorElement>('a[data-footnote-ref]');
    expect(call(first)?.id).toBeTruthy();
    expect(call(first)?.id).not.toBe(call(second)?.id);
    expect(call(first)?.getAttribute('target')).toBeNull();

    window.location.hash = '#/c/open-chat';
    const definition = first.querySelector('li[id]');
    const scrolled = vi.fn();
    Object.defineProperty(definition, 'scrollIntoView', { value: scrolled });
    fireEvent.click(call(first) as HTMLAnchorElement);
    expect(window.location.hash).toBe('#/c/open-chat');
    expect(scrolled).toHaveBeenCalled();
    const back = definition?.querySelector('a[data-footnote-backref]');
    expect(document.activeElement).toBe(back);
  });

  it("ranks a message's headings below the page's own title", () => {
    for (const focusable of [true, false]) {
      const { container } = render(<Markdown text={'# One\n\n## Two\n\n###### Six'} focusable={focusable} />);
      expect([...container.querySelectorAll('h1, h2, h3, h4, h5, h6')].map((h) => `${h.tagName} ${h.textContent}`)).toEqual([
        'H2 One',
        'H3 Two',
        'H6 Six',
      ]);
    }
  });

  it('shows a link whose address is unsafe as its text alone, not a link to this page', () => {
    for (const address of ['javascript:alert(1)', 'vbscript:msgbox(1)', 'data:text/html,hi']) {
      const { container, unmount } = render(<Markdown text={`[click](${address}) here`} />);
      expect(container.querySelector('a')).toBeNull();
      expect(container.textContent).toBe('click here');
      unmount();
    }
  });

  it('shows an image as a link to it, so nothing is fetched by reading a message', () => {
    const { container } = render(<Markdown text="See ![the diagram](/api/v1/conversations/c1/stream) and ![](https://example.com/a.png)" />);
    expect(container.querySelector('img')).toBeNull();
    const links = [...container.querySelectorAll('a')];
    expect(links.map((a) => [a.textContent, a.getAttribute('href'), a.getAttribute('rel')])).toEqual([
      ['Image: the diagram', '/api/v1/conversations/c1/stream', 'noopener noreferrer'],
      ['Image: https://example.com/a.png', 'https://example.com/a.png', 'noopener noreferrer'],
    ]);
    const badge = render(<Markdown text="[![CI](/badge.svg)](https://ci.example)" />);
    expect(badge.container.querySelectorAll('a')).toHaveLength(1);
    expect(badge.container.querySelector('a')?.textContent).toBe('Image: CI');
    const unsafe = render(<Markdown text="![x](javascript:alert(1))" />);
    expect(unsafe.container.querySelector('a, img')).toBeNull();
    expect(unsafe.container.textContent).toBe('Image: x');
  });

  it('renders lists and highlights fenced code', () => {
    const { container } = render(<Markdown text={'- one\n- two\n\n```js\nconst x = 1; // note\n```\n\n```unknownlang\nplain\n```'} />);
    expect([...container.querySelectorAll('ul > li')].map((li) => li.textContent)).toEqual(['one', 'two']);
    const blocks = container.querySelectorAll('pre > code');
    expect(blocks).toHaveLength(2);
    expect(blocks[0]?.classList.contains('hljs')).toBe(true);
    expect(blocks[0]?.querySelector('.hljs-keyword')?.textContent).toBe('const');
    expect(blocks[0]?.textContent).toBe('const x = 1; // note\n');
    expect(blocks[1]?.textContent).toBe('plain\n');
  });

  it('renders tables, strikethrough and bare links, as models write them', () => {
    const { container, getByRole } = render(
      <Markdown text={'| Name | Value |\n| --- | ---: |\n| a | 1 |\n| b | 2 |\n\n~~old~~ new, see https://example.com/x'} />,
    );
    expect([...container.querySelectorAll('th')].map((th) => th.textContent)).toEqual(['Name', 'Value']);
    expect([...container.querySelectorAll('tbody tr')].map((tr) => tr.textContent)).toEqual(['a1', 'b2']);
    expect(container.querySelector('del')?.textContent).toBe('old');
    const link = getByRole('link', { name: 'https://example.com/x' });
    expect(link.getAttribute('target')).toBe('_blank');
    expect(link.getAttribute('rel')).toBe('noopener noreferrer');
  });
});
