import { type MouseEvent, useEffect, useState } from 'react';

type CopyOutcome = 'copied' | 'failed';

/**
 * Copies `text()` (read at the click) and says for 2 s whether it did: on the button, and in a
 * status region, as a screen reader does not read out a button whose name changes under it. Each
 * click is its own object, so clicking again while it says "Copied" starts the 2 s again.
 */
export function CopyButton({ text, label = 'Copy', className }: { text: () => string; label?: string; className?: string }) {
  const [copy, setCopy] = useState<{ outcome: CopyOutcome } | null>(null);
  useEffect(() => {
    if (!copy) return;
    const timer = setTimeout(() => setCopy(null), 2000);
    return () => clearTimeout(timer);
  }, [copy]);
  const onCopy = (event: MouseEvent<HTMLButtonElement>) => {
    const button = event.currentTarget;
    copyText(text(), button).then(
      () => setCopy({ outcome: 'copied' }),
      () => setCopy({ outcome: 'failed' }),
    );
  };
  return (
    <div className={className}>
      <button type="button" onClick={onCopy}>
        {copy?.outcome === 'copied' ? 'Copied' : copy?.outcome === 'failed' ? 'Copy failed' : label}
      </button>
      <span className="visually-hidden" role="status">
        {copy?.outcome === 'copied' ? 'Copied to the clipboard.' : copy?.outcome === 'failed' ? 'The browser refused to copy.' : ''}
      </span>
    </div>
  );
}

/**
 * Puts `text` on the clipboard. The Clipboard API exists only on secure origins (https,
 * localhost); a server reached over plain http on a LAN address gets the older copy command,
 * which needs the text selected in the page for a moment. Focus then goes back to `from`.
 */
function copyText(text: string, from: HTMLElement): Promise<void> {
  if (navigator.clipboard) return navigator.clipboard.writeText(text);
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.opacity = '0';
  document.body.append(area);
  area.select();
  const copied = document.execCommand('copy');
  area.remove();
  from.focus();
  return copied ? Promise.resolve() : Promise.reject(new Error('the browser refused to copy'));
}
