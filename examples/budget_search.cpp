// A search that knows what its genotype costs: the cost table of every candidate
// (trainable values, exactly, and batch-1 latency timed on this machine), then a
// search whose genotype must keep within a budget of trainable values. The search
// prices the cost in alpha's objective with a weight lambda it sets itself (dual
// ascent), and derives its genotype within the budget (docs/method.md, the cost objective).
//
//   budget_search [--share X]   (the budget: the cheapest genotype plus X of the way to the costliest; 0.3)
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <vpdarts/vpdarts.hpp>

namespace vp = vpdarts;

int main(int argc, char** argv) {
  double share = 0.3;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::strcmp(argv[i], "--share") == 0) share = std::atof(argv[i + 1]);
  try {
    const vp::vit_config cfg{32, 3, 4, 64, 4, 2, 128, 5};
    vp::prompted_vit<float> model(vp::vit<float>(cfg, 1), {.prompts = 4, .classes = 5, .seed = 1});

    // the cost of every candidate at every layer
    vp::op_costs costs = vp::param_costs(model);
    vp::op_latency(model, costs, {.runs = 10});
    std::printf("%-16s %16s %20s\n", "operator", "trainable values", "ms around a block");
    for (std::size_t k = 0; k < vp::default_ops::size; ++k)
      std::printf("%-16s %16.0f %20.3f\n", std::string(vp::default_ops::names[k]).c_str(), costs.params(0, static_cast<vp::index>(k)),
                  costs.latency_ms(0, static_cast<vp::index>(k)));
    std::printf("fixed: %.0f values (the head), %.3f ms (embedding and head)\n", costs.fixed_params, costs.fixed_latency_ms);

    // a budget between the cheapest genotype and the costliest
    vp::cost_objective cost = vp::make_cost_objective(costs, vp::cost_kind::params);
    const double budget = cost.cheapest() + share * (cost.costliest() - cost.cheapest());
    cost.budget = budget;
    std::printf("budget: %.0f trainable values (cheapest genotype %.0f, costliest %.0f)\n", budget, cost.cheapest(),
                cost.costliest());

    auto data = vp::data::make_synthetic<float>({.image = 32, .count = 96, .seed = 3, .classes = {5, 6, 7, 8, 9}});
    vp::search_options o;
    o.epochs = 6;
    o.warmup_epochs = 2;
    o.batch = 16;
    o.progress = false;
    o.bilevel.cost = cost;
    o.on_epoch = [](long epoch, const vp::matrix<double>&, double train_loss, double) {
      std::printf("epoch %ld  train loss %.4f\n", epoch, train_loss);
    };
    const vp::search_result r = vp::search(model, data, o);
    for (std::size_t e = 0; e < r.cost_lambda.size(); ++e)
      std::printf("epoch %zu: expected cost %.0f, lambda %.3f\n", e + 1, r.expected_cost[e], r.cost_lambda[e]);
    const double spent = cost.of(vp::op_positions<vp::default_ops>(r.found));
    std::printf("genotype: %s\n", r.found.str().c_str());
    std::printf("its cost: %.0f trainable values; within the budget: %s\n", spent, spent <= budget ? "yes" : "no");
    vp::prompted_vit<float> derived(vp::vit<float>(cfg, 1), r.found, {.prompts = 4, .classes = 5});
    std::printf("derived model: %ld trainable values\n", static_cast<long>(derived.trainable_params()));
    return spent <= budget ? 0 : 1;
  } catch (const vp::error& e) {
    std::fprintf(stderr, "budget_search: %s\n", e.what());
    return 1;
  }
}
