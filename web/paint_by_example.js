// Paint by Example: warn on the canvas when a Paint by Example graph is wired in a way that runs
// but gives wrong pictures, and show the warnings a run sent back (a mask resized to the image).
// The notes are drawn under the node, clear of the title bar and its node-source badge.
// Two mistakes the server cannot see until a run, or at all:
//  - a Paint by Example node fed a MODEL that did not come from "Load Paint by Example Model"
//    (a checkpoint loader treats the 9-channel UNet as SD inpainting: wrong channels);
//  - a sampler driven by the Paint by Example model whose positive/negative conditioning comes
//    from a text encoder instead of "Paint by Example Exemplar Encode" (it runs, and ignores you).
import { app } from "../../scripts/app.js";

const LOADER = "PaintByExampleModelLoader";
const ENCODE = "PaintByExampleExemplarEncode";
const OWN_MODEL_NODES = new Set(["PaintByExampleEdit"]);
const RUN_WARNINGS = "pbe_warnings"; // the ui key of nodes/messages.py

function linkOf(graph, id) {
  if (id == null) return undefined;
  return graph.getLink?.(id) ?? graph.links?.get?.(id) ?? graph.links?.[id];
}

// The node a value starts at: follow the input upstream through nodes that pass the same type
// through (LoRA loaders, InpaintModelConditioning, reroutes), preferring the input named like
// the output the link leaves from.
function originOf(node, inputName) {
  const graph = node.graph ?? app.graph;
  let current = node;
  let input = node.inputs?.find((slot) => slot.name === inputName);
  const seen = new Set();
  while (input?.link != null) {
    const link = linkOf(graph, input.link);
    const source = link && graph.getNodeById(link.origin_id);
    if (!source || seen.has(source.id)) return source ?? null;
    seen.add(source.id);
    current = source;
    const outputName = source.outputs?.[link.origin_slot]?.name;
    const sameType = (source.inputs ?? []).filter((slot) => slot.type === input.type && slot.link != null);
    input = sameType.find((slot) => slot.name === outputName) ?? sameType[0];
  }
  return current === node ? null : current;
}

function warningFor(node) {
  const hasInput = (name) => node.inputs?.some((slot) => slot.name === name && slot.link != null);
  if (!hasInput("model")) return null;
  const modelFrom = originOf(node, "model")?.type;
  if (OWN_MODEL_NODES.has(node.type) && modelFrom !== LOADER) {
    return "model must come from Load Paint by Example Model";
  }
  const exemplarConditioning = ["positive", "negative"].filter(
    (name) => hasInput(name) && originOf(node, name)?.type === ENCODE
  );
  const otherConditioning = ["positive", "negative"].filter(
    (name) => hasInput(name) && originOf(node, name)?.type !== ENCODE
  );
  if (modelFrom === LOADER && otherConditioning.length) {
    return `${otherConditioning.join(" and ")} should come from Paint by Example Exemplar Encode`;
  }
  if (modelFrom && modelFrom !== LOADER && exemplarConditioning.length) {
    return "exemplar conditioning needs the model of Load Paint by Example Model";
  }
  return null;
}

function refresh(graph) {
  for (const node of graph?._nodes ?? graph?.nodes ?? []) {
    const warning = warningFor(node);
    if (warning !== (node.pbeWarning ?? null)) {
      node.pbeWarning = warning;
      node.setDirtyCanvas?.(true, true);
    }
  }
}

let pending = false;
function scheduleRefresh(graph) {
  if (pending) return;
  pending = true;
  setTimeout(() => {
    pending = false;
    refresh(graph ?? app.graph);
  }, 0);
}

app.registerExtension({
  name: "PaintByExample.WiringWarnings",

  async beforeRegisterNodeDef(nodeType) {
    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function (...args) {
      const result = onConnectionsChange?.apply(this, args);
      scheduleRefresh(this.graph);
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output, ...rest) {
      const result = onExecuted?.apply(this, [output, ...rest]);
      this.pbeRunNotes = output?.[RUN_WARNINGS] ?? null;
      this.setDirtyCanvas?.(true, true);
      return result;
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx, ...rest) {
      const result = onDrawForeground?.apply(this, [ctx, ...rest]);
      const notes = [this.pbeWarning, ...(this.pbeRunNotes ?? [])].filter(Boolean);
      if (notes.length && !this.flags?.collapsed) {
        ctx.save();
        ctx.font = "bold 12px sans-serif";
        ctx.fillStyle = "#ff6b6b";
        notes.forEach((note, index) => ctx.fillText(`⚠ ${note}`, 4, this.size[1] + 16 + 15 * index));
        ctx.restore();
      }
      return result;
    };
  },

  async afterConfigureGraph() {
    scheduleRefresh(app.graph);
  },
});
