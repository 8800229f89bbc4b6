import { act, fireEvent, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MessageItem } from '../src/components/MessageItem';

const markdownRenders = vi.hoisted(() => ({ count: 0 }));
vi.mock('../src/components/Markdown', async (importOriginal) => {
  const real = await importOriginal<typeof import('../src/components/Markdown')>();
  return {
    Markdown: (props: Parameters<typeof real.Markdown>[0]) => {
      markdownRenders.count += 1;
      return real.Markdown(props);
    },
    StreamingMarkdown: real.StreamingMarkdown,
  };
});

describe('MessageItem', () => {
  afterEach(() => vi.unstubAllGlobals());

  it('is not rendered again when the view around it is, so typing does not parse every message', () => {
    function View({ draft }: { draft: string }) {
      return (
        <>
          <MessageItem role="assistant" content="Some **markdown**" />
          <p>{draft}</p>
        </>
      );
    }
    const { rerender } = render(<View draft="a" />);
    const first = markdownRenders.count;
    expect(first).toBeGreaterThan(0);
    rerender(<View draft="ab" />);
    rerender(<View draft="abc" />);
    expect(markdownRenders.count).toBe(first);
  });

  it('says a reply stopped with no text yet may not come, and one stopped part way will', () => {
    const { rerender } = render(<MessageItem role="assistant" content="" state="stopped" />);
    expect(screen.getByText('Stopped before the reply began. If the server goes on with it, the reply will appear once stored.')).toBeTruthy();
    rerender(<MessageItem role="assistant" content="Half a" state="stopped" />);
    expect(screen.getByText('Stopped. The full reply will appear once the server has stored it.')).toBeTruthy();
  });

  it('copies a stored message as written and says so for a moment', async () => {
    const writeText = vi.fn().mockResolvedValue(undefined);
    vi.stubGlobal('navigator', { ...navigator, clipboard: { writeText } });
    vi.useFakeTimers({ shouldAdvanceTime: true });
    try {
      render(<MessageItem role="assistant" content={'Use `ls -l`:\n\n- one'} />);
      expect(screen.getByRole('status').textContent).toBe('');
      fireEvent.click(screen.getByRole('button', { name: 'Copy' }));
      expect(await screen.findByRole('button', { name: 'Copied' })).toBeTruthy();
      expect(screen.getByRole('status').textContent).toBe('Copied to the clipboard.');
      expect(writeText).toHaveBeenCalledWith('Use `ls -l`:\n\n- one');
      await act(async () => {
        await vi.advanceTimersByTimeAsync(2500);
      });
      expect(screen.getByRole('button', { name: 'Copy' })).toBeTruthy();
      expect(screen.getByRole('status').textContent).toBe('');
    } finally {
      vi.useRealTimers();
    }
  });

  it('a second click while it says Copied starts its moment again', async () => {
    vi.stubGlobal('navigator', { ...navigator, clipboard: { writeText: vi.fn().mockResolvedValue(undefined) } });
    vi.useFakeTimers({ shouldAdvanceTime: true });
    try {
      render(<MessageItem role="assistant" content="Hi" />);
      fireEvent.click(screen.getByRole('button', { name: 'Copy' }));
      expect(await screen.findByRole('button', { name: 'Copied' })).toBeTruthy();
      await act(async () => {
        await vi.advanceTimersByTimeAsync(1500);
      });
      await act(async () => {
        fireEvent.click(screen.getByRole('button', { name: 'Copied' }));
      });
      await act(async () => {
        await vi.advanceTimersByTimeAsync(1000);
      });
      expect(screen.getByRole('button', { name: 'Copied' })).toBeTruthy();
      await act(async () => {
        await vi.advanceTimersByTimeAsync(1500);
      });
      expect(screen.getByRole('button', { name: 'Copy' })).toBeTruthy();
    } finally {
      vi.useRealTimers();
    }
  });

  it('says when the browser refuses to copy, and offers no copy while a reply streams', async () => {
    vi.stubGlobal('navigator', { ...navigator, clipboard: { writeText: vi.fn().mockRejectedValue(new Error('denied')) } });
    const { rerender } = render(<MessageItem role="user" content="Hello" />);
    fireEvent.click(screen.getByRole('button', { name: 'Copy' }));
    expect(await screen.findByRole('button', { name: 'Copy failed' })).toBeTruthy();
    expect(screen.getByRole('status').textContent).toBe('The browser refused to copy.');
    rerender(<MessageItem role="assistant" content="Hal" state="streaming" />);
    expect(screen.queryByRole('button', { name: /Copy/ })).toBeNull();
  });

  it('copies over plain http too, where the Clipboard API is missing, and keeps focus on the button', async () => {
    vi.stubGlobal('navigator', { ...navigator, clipboard: undefined });
    const execCommand = vi.fn().mockReturnValue(true);
    document.execCommand = execCommand;
    render(<MessageItem role="assistant" content="Plain text" />);
    const button = screen.getByRole('button', { name: 'Copy' });
    button.focus();
    fireEvent.click(button);
    expect(await screen.findByRole('button', { name: 'Copied' })).toBeTruthy();
    expect(execCommand).toHaveBeenCalledWith('copy');
    expect(document.activeElement).toBe(button);
    expect(document.querySelector('textarea')).toBeNull();
  });

  it('a message still on its way has no Copy button', () => {
    render(<MessageItem role="user" content="Sending" state="sending" />);
    expect(screen.queryByRole('button', { name: /Copy/ })).toBeNull();
  });
});
