/**
 * A small, strict-enough XML reader for what UPnP IGDs send: device descriptions and SOAP
 * answers. Elements, attributes (skipped), text with the five entities and numeric
 * references, comments, processing instructions and CDATA. Namespace prefixes are dropped
 * from names (`s:Envelope` -> `Envelope`). Input is untrusted: its size and nesting depth are
 * bounded, and anything it cannot read is an ERR_PORTMAP error, never a partial tree.
 */
import { ErrorCode, NattravError } from '../errors.js';

/** The largest document read, bytes (a real IGD description is a few KiB). */
export const XML_MAX_BYTES = 64 * 1024;
/** The deepest nesting read. */
export const XML_MAX_DEPTH = 32;

/** An element: its local name, its text (concatenated) and its child elements. */
export interface XmlElement {
  /** Local name, without namespace prefix. */
  readonly name: string;
  /** The element's own text, entities decoded, trimmed. */
  text: string;
  /** Child elements in document order. */
  readonly children: XmlElement[];
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function fail(message: string): NattravError {
  return new NattravError(ErrorCode.PortMapping, `UPnP: XML ${message}`);
}

function decodeText(raw: string): string {
  return raw.replace(/&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|[A-Za-z][\w.-]{0,30})?(;)?/g, (whole, ref: string | undefined, semi: string | undefined) => {
    if (ref === undefined || semi === undefined) throw fail(`has a bare & ("${whole.slice(0, 20)}")`);
    if (ref.startsWith('#x')) return codePoint(parseInt(ref.slice(2), 16), whole);
    if (ref.startsWith('#')) return codePoint(parseInt(ref.slice(1), 10), whole);
    const entity = ENTITIES[ref];
    if (entity === undefined) throw fail(`has an unknown entity ${whole}`);
    return entity;
  });
}

function codePoint(value: number, whole: string): string {
  if (value > 0x10ffff || value === 0) throw fail(`has an invalid character reference ${whole}`);
  return String.fromCodePoint(value);
}

function localName(qname: string): string {
  const colon = qname.indexOf(':');
  return colon < 0 ? qname : qname.slice(colon + 1);
}

const NAME = /^[A-Za-z_][\w.:-]*/;

/** Parses `text` into its root element; throws ERR_PORTMAP naming what was wrong. */
export function parseXml(text: string): XmlElement {
  if (Buffer.byteLength(text) > XML_MAX_BYTES) throw fail(`document is larger than ${XML_MAX_BYTES} bytes`);
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  let i = 0;
  const textParts = new Map<XmlElement, string[]>();
  const addText = (raw: string): void => {
    const top = stack[stack.length - 1];
    if (top === undefined) {
      if (raw.trim() !== '') throw fail('has text outside the root element');
      return;
    }
    textParts.get(top)?.push(raw);
  };
  while (i < text.length) {
    const lt = text.indexOf('<', i);
    if (lt < 0) {
      addText(decodeText(text.slice(i)));
      break;
    }
    if (lt > i) addText(decodeText(text.slice(i, lt)));
    if (text.startsWith('<!--', lt)) {
      const end = text.indexOf('-->', lt + 4);
      if (end < 0) throw fail('has an unterminated comment');
      i = end + 3;
    } else if (text.startsWith('<![CDATA[', lt)) {
      const end = text.indexOf(']]>', lt + 9);
      if (end < 0) throw fail('has an unterminated CDATA section');
      addText(text.slice(lt + 9, end));
      i = end + 3;
    } else if (text.startsWith('<?', lt)) {
      const end = text.indexOf('?>', lt + 2);
      if (end < 0) throw fail('has an unterminated processing instruction');
      i = end + 2;
    } else if (text.startsWith('<!', lt)) {
      throw fail('has a DOCTYPE or other declaration, which is not accepted');
    } else {
      const gt = text.indexOf('>', lt + 1);
      if (gt < 0) throw fail('has an unterminated tag');
      i = gt + 1;
      const inner = text.slice(lt + 1, gt);
      if (inner.startsWith('/')) {
        const name = localName(inner.slice(1).trim());
        const open = stack.pop();
        if (open === undefined || open.name !== name) throw fail(`closes <${name}> but <${open?.name ?? 'nothing'}> is open`);
        open.text = (textParts.get(open) ?? []).join('').trim();
        textParts.delete(open);
        continue;
      }
      const selfClosing = inner.endsWith('/');
      const match = NAME.exec(selfClosing ? inner.slice(0, -1) : inner);
      if (match === null) throw fail(`has a tag without a valid name: <${inner.slice(0, 40)}>`);
      const element: XmlElement = { name: localName(match[0]), text: '', children: [] };
      const parent = stack[stack.length - 1];
      if (parent === undefined) {
        if (root !== undefined) throw fail('has more than one root element');
        root = element;
      } else parent.children.push(element);
      if (!selfClosing) {
        if (stack.length >= XML_MAX_DEPTH) throw fail(`nests deeper than ${XML_MAX_DEPTH} elements`);
        stack.push(element);
        textParts.set(element, []);
      }
    }
  }
  if (stack.length > 0) throw fail(`ends with <${stack[stack.length - 1]?.name}> still open`);
  if (root === undefined) throw fail('has no root element');
  return root;
}

/** The first child of `element` called `name`, if any. */
export function child(element: XmlElement, name: string): XmlElement | undefined {
  return element.children.find((c) => c.name === name);
}

/** The text of the first child called `name`, or undefined. */
export function childText(element: XmlElement, name: string): string | undefined {
  return child(element, name)?.text;
}

/** Every element called `name` in the tree below `element` (depth first, document order). */
export function descendants(element: XmlElement, name: string): XmlElement[] {
  const found: XmlElement[] = [];
  const walk = (e: XmlElement): void => {
    for (const c of e.children) {
      if (c.name === name) found.push(c);
      walk(c);
    }
  };
  walk(element);
  return found;
}
