import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { openChatCreatedAsPageWasLeft } from './address';
import { App } from './App';
import { restoreFirstSendsCutOff } from './drafts';
import { applyStoredTheme } from './hooks/useTheme';
import './styles.css';

applyStoredTheme();
restoreFirstSendsCutOff();
openChatCreatedAsPageWasLeft();

const root = document.getElementById('root');
if (!root) throw new Error('index.html has no #root element');
createRoot(root).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
