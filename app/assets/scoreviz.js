/* scoreviz: what the page does in the browser itself (served by the app: no inline script). */
(function () {
  // A click on a run table row shows or hides its run. The run picker's value changes here, at
  // once: the table is drawn again as run headers arrive, and a click on a row being replaced
  // would be lost if it went through the row's own n_clicks (the new row starts at 0).
  document.addEventListener('click', function (event) {
    var row = event.target && event.target.closest && event.target.closest('#run-table tr[data-run]');
    if (!row || !window.dash_clientside || !window.dash_clientside.set_props || !window.dash_component_api) {
      return;
    }
    var picker = window.dash_component_api.getLayout('run-picker');
    var current = (picker && picker.props && picker.props.value) || [];
    var run = row.getAttribute('data-run');
    var next = current.indexOf(run) >= 0
      ? current.filter(function (r) { return r !== run; })
      : current.concat([run]);
    window.dash_clientside.set_props('run-picker', {value: next});
  });

  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.scoreviz = {
    // the group-by bar, on the views that draw groups only
    groupBar: function (view, grouping) {
      return {display: (grouping || []).indexOf(view) >= 0 ? 'flex' : 'none'};
    }
  };
})();
